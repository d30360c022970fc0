"""Keep serving through PostgreSQL and Redis outages, lose nothing, double nothing, overspend nothing (issue 15).

Real `gateway serve` processes on a PostgreSQL ledger and Redis, each reached through a TCP proxy the test cuts
(`tests/e2e/cutproxy.py`), the simulated vendors counting every request they receive, the OpenAI SDK as client.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from gateway.decisions.limits import cost_units
from gateway.demo.vendors import VendorCluster
from tests.e2e.cutproxy import CutProxy
from tests.e2e.procs import ServeProcess, clear_redis_prefix, fresh_postgres, redis_prefix
from tests.e2e.test_budgets_e2e import (bearer, chat_body, create_key, gateway_config, metric_samples, pg_rows,
                                        start_replicas, worst_case)
from tests.e2e.traffic import Traffic, send, served_share


@pytest.fixture
def pg() -> Iterator[tuple[str, CutProxy]]:
    with fresh_postgres() as url, CutProxy("127.0.0.1", 5432) as proxy:
        yield url, proxy


@pytest.fixture
def redis_proxy() -> Iterator[tuple[str, CutProxy]]:
    prefix = redis_prefix()
    with CutProxy("127.0.0.1", 6379) as proxy:
        yield prefix, proxy
    clear_redis_prefix(prefix)


def config_for(tmp: Path, vendors: VendorCluster, pg_url: str, pg_proxy: CutProxy | None, prefix: str,
               redis_proxy: CutProxy | None = None, mode: str = "degrade") -> tuple[Path, dict[str, str]]:
    def edit(data: dict[str, Any]) -> None:
        g = data["gateway"]
        g["spool_dir"] = str(tmp / "spool")
        g["on_shared_state_unavailable"] = mode
        if redis_proxy is not None:
            g["redis_url"] = f"redis://{redis_proxy.url_host}/0"

    url = pg_url.replace("127.0.0.1:5432", pg_proxy.url_host) if pg_proxy is not None else pg_url
    return gateway_config(tmp, vendors, ledger_url=url, redis_prefix_=prefix, require_api_key=False, edit=edit)


def client(url: str, key: str = "sk-app-own-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def gauge(url: str, name: str) -> float:
    return sum(s.value for s in metric_samples(url, name))


def wait_for(cond: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s"
        time.sleep(0.1)


def ledger(pg_url: str) -> list[dict[str, Any]]:
    return pg_rows(pg_url, "SELECT request_id, status, key_id, total_cost_reporting FROM ledger")


def vendor_requests(vendors: VendorCluster) -> int:
    return sum(vendors.stats(p)["requests"] for p in vendors.vendors)


def test_postgres_outage_spools_rows_keeps_serving_and_drains_exactly_once(
        tmp_path: Path, fresh_vendors: VendorCluster, pg: tuple[str, CutProxy],
        redis_proxy: tuple[str, CutProxy]) -> None:
    pg_url, pg_proxy = pg
    config, env = config_for(tmp_path, fresh_vendors, pg_url, pg_proxy, redis_proxy[0])
    with ExitStack() as stack:
        (gw,) = start_replicas(stack, config, env, tmp_path, 1)
        key = create_key(gw.url, "search", budget="5", budget_period="day")["key"]
        keyed, anonymous = client(gw.url, key), client(gw.url)
        # The key's budget counter is seeded from the ledger on first use: before the outage.
        assert send(keyed, chat_body(text="first")).ok

        def make(thread: int, i: int) -> tuple[openai.OpenAI, dict[str, Any], bool]:
            return (keyed, chat_body(text=f"k{i}"), False) if thread == 0 else (
                anonymous, chat_body(text=f"a{i}"), i % 2 == 1)

        with Traffic(make, threads=2) as traffic:
            wait_for(lambda: sum(s.ok for s in traffic.sent) >= 6, what="traffic flowing")
            pg_proxy.cut()
            cut_at = time.monotonic()
            time.sleep(2.5)
            ready = httpx.get(gw.url + "/readyz", timeout=5)
            pending_during = gauge(gw.url, "gateway_ledger_pending_rows")
            time.sleep(2.5)
            restored_at = time.monotonic()
            pg_proxy.restore()
            time.sleep(1.5)
        wait_for(lambda: gauge(gw.url, "gateway_ledger_pending_rows") == 0, what="journal drained")
        after = httpx.get(gw.url + "/readyz", timeout=5).json()
        wait_for(lambda: len(ledger(pg_url)) == vendor_requests(fresh_vendors), 10, "every row in the ledger")
    during = traffic.between(cut_at, restored_at)
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert ready.json()["checks"]["ledger"].endswith("(spooling)")
    assert after["status"] == "ready"
    assert pending_during > 0
    assert len(during) >= 5 and served_share(during) == 1.0, [s for s in during if not s.ok]
    rows = ledger(pg_url)
    ids = [r["request_id"] for r in rows]
    assert len(ids) == len(set(ids)) == vendor_requests(fresh_vendors)  # nothing lost, nothing doubled
    assert {r["status"] for r in rows} == {"success"}
    answered = {s.request_id for s in traffic.sent if s.ok}
    assert answered <= set(ids)  # every request a client got an answer for is billed
    assert sum(Decimal(r["total_cost_reporting"]) for r in rows if r["key_id"]) <= Decimal(5)
    assert not list((tmp_path / "spool").glob("*.journal"))


def test_rows_spooled_before_a_kill_9_reach_the_ledger_at_the_next_start(
        tmp_path: Path, fresh_vendors: VendorCluster, pg: tuple[str, CutProxy],
        redis_proxy: tuple[str, CutProxy]) -> None:
    pg_url, pg_proxy = pg
    config, env = config_for(tmp_path, fresh_vendors, pg_url, pg_proxy, redis_proxy[0])
    first = ServeProcess(config, env, tmp_path / "first.log")
    try:
        first.wait_ready()
        pg_proxy.cut()
        sent = [send(client(first.url), chat_body(text=f"spooled {i}")) for i in range(8)]
        assert all(s.ok for s in sent), sent  # answered once durable in the journal
        assert list((tmp_path / "spool").glob("*.journal"))
        first.kill9()
    finally:
        first.stop()
    pg_proxy.restore()
    with ExitStack() as stack:
        start_replicas(stack, config, env, tmp_path, 1, log_prefix="second")  # replays, then serves
        rows = {r["request_id"]: r for r in ledger(pg_url)}
    assert {s.request_id for s in sent} <= set(rows)
    assert len(rows) == vendor_requests(fresh_vendors) == 8
    assert {r["status"] for r in rows.values()} == {"success"}  # their ends were journaled: not interrupted
    assert not list((tmp_path / "spool").glob("*.journal"))


def test_redis_outage_two_replicas_keep_serving_on_local_shares_and_never_overspend(
        tmp_path: Path, fresh_vendors: VendorCluster, pg: tuple[str, CutProxy],
        redis_proxy: tuple[str, CutProxy]) -> None:
    pg_url, _ = pg
    prefix, proxy = redis_proxy
    config, env = config_for(tmp_path, fresh_vendors, pg_url, None, prefix, proxy)
    worst = worst_case(chat_body())
    budget = worst * 40
    with ExitStack() as stack:
        a, b = start_replicas(stack, config, env, tmp_path, 2)
        created = create_key(a.url, "search", budget=str(budget), budget_period="day")
        key_id, key = created["id"], created["key"]
        for i in range(6):
            assert send(client((a, b)[i % 2].url, key), chat_body(text=f"before {i}")).ok
        time.sleep(2.5)  # each replica registered and saw the other alive (presence)
        proxy.cut()
        during = []
        for i in range(120):
            replica = (a, b)[i % 2]
            during.append(send(client(replica.url, key), chat_body(text=f"during {i}")))
            during.append(send(client(replica.url), chat_body(text=f"anonymous {i}")))
        ready = httpx.get(a.url + "/readyz", timeout=5)
        proxy.restore()
        time.sleep(3)  # reconciled
        for i in range(4):
            send(client((a, b)[i % 2].url, key), chat_body(text=f"after {i}"))
        wait_for(lambda: len(ledger(pg_url)) == vendor_requests(fresh_vendors), 15, "every row in the ledger")
        import redis as redis_sync

        r = redis_sync.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            counter = [k for k in r.scan_iter(match=f"{prefix}budget:key:{key_id}:*") if b":holds" not in k][0]
            redis_spent = int(r.hget(counter, "spent") or 0)
            redis_reserved = int(r.hget(counter, "reserved") or 0)
        finally:
            r.close()
    anon = during[1::2]
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert served_share(anon) == 1.0  # no budget, no limit: every request served
    served_keyed = sum(s.ok for s in during[0::2])
    assert served_keyed > 0
    refused = [s for s in during[0::2] if not s.ok]
    assert refused and {(s.status, s.code) for s in refused} == {(429, "budget_exceeded")}
    rows = ledger(pg_url)
    assert len(rows) == len({r["request_id"] for r in rows}) == vendor_requests(fresh_vendors)
    key_rows = [r for r in rows if r["key_id"] == key_id]
    spent = sum(Decimal(r["total_cost_reporting"]) for r in key_rows)
    assert spent <= budget  # never overspent, outage included
    # Spend made while degraded reached Redis exactly once: the counter equals the ledger (costs rounded up).
    assert redis_spent == sum(cost_units(Decimal(r["total_cost_reporting"])) for r in key_rows)
    assert redis_reserved == 0


def test_refuse_mode_answers_503_while_redis_is_down_and_calls_no_vendor(
        tmp_path: Path, fresh_vendors: VendorCluster, pg: tuple[str, CutProxy],
        redis_proxy: tuple[str, CutProxy]) -> None:
    pg_url, _ = pg
    prefix, proxy = redis_proxy
    config, env = config_for(tmp_path, fresh_vendors, pg_url, None, prefix, proxy, mode="refuse")
    with ExitStack() as stack:
        (gw,) = start_replicas(stack, config, env, tmp_path, 1)
        key = create_key(gw.url, "search", budget="5", budget_period="day")["key"]
        assert send(client(gw.url, key), chat_body()).ok
        before = vendor_requests(fresh_vendors)
        proxy.cut()
        refused = send(client(gw.url, key), chat_body())
        ready = httpx.get(gw.url + "/readyz", timeout=5)
        proxy.restore()
    assert (refused.status, refused.code) == (503, "state_unavailable")
    assert vendor_requests(fresh_vendors) == before
    assert ready.status_code == 503
