"""The ledger end to end, the real OpenAI SDK as client, real loopback vendors (contract section 7).

- A streamed request whose client goes away after the first chunk is still billed for everything the vendor
  generated (the gateway reads the upstream to its end).
- `kill -9` of `gateway serve` during 50 concurrent streams, then a restart on the same ledger: a row for every
  request the vendor received, none left `in_flight` (the old replica's liveness lock is free, so the new process
  closes its rows as `interrupted` at start-up, without waiting for a heartbeat to go stale). SQLite and PostgreSQL.
- A non-streaming response is only sent once its row is durable: read by another connection the moment the
  response arrives, the row is there, completed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import openai
import pytest

from gateway.demo.vendors import VendorCluster, env_for
from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows
from tests.e2e.procs import PG_ADMIN_DSN, ServeProcess, demo_data, fresh_postgres, write_config

Reader = Callable[[], list[dict[str, Any]]]


def sqlite_reader(url: str, cwd: Path | None = None) -> Reader:
    path = url.removeprefix("sqlite:///")
    if cwd is not None and not Path(path).is_absolute():
        path = str(cwd / path)

    def read() -> list[dict[str, Any]]:
        with closing(sqlite3.connect(path, timeout=10)) as conn:  # a separate connection, not the gateway's
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]

    return read


def pg_reader(url: str) -> Reader:
    import asyncpg

    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM ledger ORDER BY id")]
        finally:
            await conn.close()

    return lambda: asyncio.run(fetch())


def reader_for(url: str, cwd: Path | None = None) -> Reader:
    return pg_reader(url) if url.startswith("postgresql") else sqlite_reader(url, cwd)


@contextmanager
def ledger_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    import asyncpg

    async def reachable() -> bool:
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return False
        await conn.close()
        return True

    if not asyncio.run(reachable()):
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    with fresh_postgres() as url:
        yield url


# ----------------------------------------------------------------------------------- a. client disconnect
def test_stream_whose_client_disconnects_after_the_first_chunk_is_billed_in_full(fresh_vendors: VendorCluster) -> None:
    fresh_vendors.control("deepseek", "slow_stream", delay_s=0.1)  # 8 content chunks, 0.1 s before each
    with GatewayThread(demo_config(fresh_vendors)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="deepseek-v2", messages=[{"role": "user", "content": "a long story please"}], stream=True,
            max_tokens=16)
        first = next(iter(stream))  # the role chunk arrives at once; the content is still being generated
        assert first.choices[0].delta.role == "assistant"
        stream.close()  # the client hangs up (closes the HTTP response)
        disconnected_at = time.monotonic()
        rows = ledger_rows(gw, wait_for=1, timeout_s=10)
    assert fresh_vendors.stats("deepseek")["requests"] == 1
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "client_disconnected"
    # Billed for what the vendor generated (its own usage report at the end of the stream), not for what the
    # client read before it left: the gateway kept reading the vendor to the end.
    assert (row["usage_source"], row["output_tokens"]) == ("provider", 16)
    assert row["input_tokens"] > 0 and row["total_cost"] is not None and float(row["total_cost"]) > 0
    assert time.monotonic() - disconnected_at > 0.3, "the row closed only once the vendor's stream ended"


# ------------------------------------------------------------------------------------- b. kill -9, restart
STREAMS = 50


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_50_streams_then_restart_leaves_a_row_for_every_vendor_request(
        backend: str, tmp_path: Path, fresh_vendors: VendorCluster) -> None:
    config_path = write_config(tmp_path / "gateway.yaml", demo_data())
    with ledger_url(backend, tmp_path) as url:
        env = {**env_for(fresh_vendors), "GATEWAY_LEDGER_URL": url}
        read = reader_for(url, tmp_path)
        # Each stream: 8 content chunks 0.5 s apart, so all 50 are mid-stream when the gateway dies.
        fresh_vendors.control("deepseek", "slow_stream", delay_s=0.5)
        first = ServeProcess(config_path, env, tmp_path / "serve-1.log")
        try:
            first.wait_ready()
            outcomes: list[str] = []
            lock = threading.Lock()

            def one(i: int) -> None:
                client = openai.OpenAI(base_url=first.url + "/v1", api_key="x", max_retries=0, timeout=30)
                try:
                    for _ in client.chat.completions.create(
                            model="deepseek-v2", messages=[{"role": "user", "content": f"stream {i}"}],
                            stream=True, max_tokens=32):
                        pass
                    result = "completed"
                except (openai.APIError, Exception) as e:  # the gateway died under it
                    result = type(e).__name__
                with lock:
                    outcomes.append(result)

            with ThreadPoolExecutor(STREAMS) as pool:
                futures = [pool.submit(one, i) for i in range(STREAMS)]
                deadline = time.monotonic() + 20
                while fresh_vendors.stats("deepseek")["requests"] < STREAMS:
                    assert time.monotonic() < deadline, "the streams did not all reach the vendor"
                    time.sleep(0.02)
                first.kill9()
                for f in futures:
                    f.result(timeout=30)
        finally:
            first.stop()
        received = fresh_vendors.stats("deepseek")["requests"]
        assert received == STREAMS and "completed" not in outcomes
        before = read()
        # Every request that reached the vendor had its row durable before it was sent upstream.
        assert len(before) == received and {r["status"] for r in before} == {"in_flight"}
        dead_replica = {r["replica_id"] for r in before}
        assert len(dead_replica) == 1

        fresh_vendors.reset()
        second = ServeProcess(config_path, env, tmp_path / "serve-2.log")
        try:
            t0 = time.monotonic()
            second.wait_ready()
            # Start-up recovery ran before the server was ready: no waiting for a stale heartbeat (90 s here).
            rows = read()
            ready_after = time.monotonic() - t0
        finally:
            second.stop()
    assert ready_after < 15
    assert len(rows) == received
    assert not [r for r in rows if r["status"] == "in_flight"]
    assert {r["status"] for r in rows} == {"interrupted"}
    assert {r["usage_source"] for r in rows} == {"estimated"}
    assert {r["replica_id"] for r in rows} == dead_replica
    assert all(r["input_tokens"] > 0 and r["total_cost"] is not None for r in rows)  # estimated and priced
    assert "closed 50 in-flight rows" in second.log_path.read_text()


# ------------------------------------------------------------------------------ c. durable before the response
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_non_streaming_response_is_sent_only_after_its_row_is_durable(
        backend: str, tmp_path: Path, fresh_vendors: VendorCluster) -> None:
    with ledger_url(backend, tmp_path) as url:
        read = reader_for(url)
        with GatewayThread(demo_config(fresh_vendors, ledger_url=url)) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)

            def one(i: int) -> tuple[str, dict[str, Any] | None]:
                raw = client.chat.completions.with_raw_response.create(
                    model="auto" if i % 2 else "deepseek-v2", max_tokens=5 + i % 7,
                    messages=[{"role": "user", "content": f"durable {i}"}])
                request_id = raw.headers["x-gateway-request-id"]
                completion = raw.parse()
                # At once, with no waiting or retrying: another connection must already see the finished row.
                found = [r for r in read() if r["request_id"] == request_id]
                assert completion.usage is not None
                return request_id, (found[0] if found else None) if len(found) < 2 else None

            sequential = [one(i) for i in range(10)]
            with ThreadPoolExecutor(10) as pool:  # concurrent ones ride on shared group commits
                concurrent = list(pool.map(one, range(10, 40)))
    for request_id, row in sequential + concurrent:
        assert row is not None, f"{request_id}: no ledger row when its response arrived"
        assert row["status"] == "success" and row["usage_source"] == "provider", row
        assert row["output_tokens"] > 0 and row["total_cost"] is not None
