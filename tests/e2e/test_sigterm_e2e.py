"""SIGTERM under load: a real `gateway serve` stops accepting, lets in-flight requests (streams included) finish,
flushes its ledger rows and exits 0 (issue 15, item 6)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import openai

from gateway.demo.vendors import VendorCluster, env_for
from tests.e2e.procs import ServeProcess, demo_data, write_config

STREAMS = 12
PLAIN = 12


def test_sigterm_under_load_drains_streams_and_requests_flushes_rows_and_exits_0(
        tmp_path: Path, fresh_vendors: VendorCluster) -> None:
    data = demo_data()
    data["gateway"]["ledger_url"] = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = write_config(tmp_path / "gateway.yaml", data)
    # Streams: 8 content chunks 0.3 s apart (~2.4 s each); plain requests: 1.5 s before the first byte.
    fresh_vendors.control("deepseek", "slow_stream", delay_s=0.3)
    fresh_vendors.control("dashscope", "slow", delay_s=1.5)
    proc = ServeProcess(config, env_for(fresh_vendors), tmp_path / "serve.log")
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()
    try:
        proc.wait_ready()
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="x", max_retries=0, timeout=60)

        def stream(i: int) -> None:
            chunks = list(client.chat.completions.create(
                model="deepseek-v2", messages=[{"role": "user", "content": f"stream {i}"}], stream=True,
                max_tokens=32))
            finished = any(c.choices and c.choices[0].finish_reason for c in chunks)
            with lock:
                outcomes.append(("stream", "complete" if finished else "cut"))

        def plain(i: int) -> None:
            r = client.chat.completions.create(model="qwen-long", messages=[{"role": "user", "content": f"p {i}"}],
                                               max_tokens=16)
            with lock:
                outcomes.append(("plain", "complete" if r.choices[0].message.content else "empty"))

        with ThreadPoolExecutor(STREAMS + PLAIN) as pool:
            futures = [pool.submit(stream, i) for i in range(STREAMS)] + [pool.submit(plain, i) for i in range(PLAIN)]
            deadline = time.monotonic() + 20
            while (fresh_vendors.stats("deepseek")["requests"] < STREAMS
                   or fresh_vendors.stats("dashscope")["requests"] < PLAIN):
                assert time.monotonic() < deadline, "the load did not reach the vendors"
                time.sleep(0.02)
            os.killpg(proc.proc.pid, signal.SIGTERM)
            refused_new = False
            while time.monotonic() < deadline + 10 and not refused_new:  # stops accepting at once
                try:
                    httpx.get(proc.url + "/healthz", timeout=1)
                    time.sleep(0.05)
                except httpx.HTTPError:
                    refused_new = True
            for f in futures:
                f.result(timeout=60)  # none raised: every in-flight request was answered in full
        code = proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    assert refused_new
    assert code == 0, proc.log()
    assert sorted(outcomes) == sorted([("stream", "complete")] * STREAMS + [("plain", "complete")] * PLAIN)
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
        rows = conn.execute("SELECT status, stream FROM ledger").fetchall()
    received = fresh_vendors.stats("deepseek")["requests"] + fresh_vendors.stats("dashscope")["requests"]
    assert len(rows) == received == STREAMS + PLAIN
    assert {status for status, _ in rows} == {"success"}  # flushed: none left in flight
