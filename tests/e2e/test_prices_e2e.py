"""The live price table across real `gateway serve` replicas sharing Redis and PostgreSQL (issue 5).

A PUT on one replica must be in force on the other within 1 s (its routing flips and its GET /admin/prices
names the new version), and a change scheduled a moment ahead must take effect on both at that instant, without
a restart, with the ledger rows naming the version they were priced by.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import httpx
import pytest

from gateway.demo.vendors import VendorCluster
from tests.e2e.procs import clear_redis_prefix, fresh_postgres, redis_prefix
from tests.e2e.test_budgets_e2e import ADMIN, chat_body, gateway_config, pg_rows, start_replicas

AUTO = chat_body("auto", "which vendor is cheapest today?", max_tokens=20)


@pytest.fixture(scope="module")
def replicas(vendors: VendorCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prices-shared")
    prefix = redis_prefix()
    try:
        with fresh_postgres() as pg, ExitStack() as stack:
            # No client keys needed here: this is about the price table.
            config, env = gateway_config(tmp, vendors, ledger_url=pg, redis_prefix_=prefix, require_api_key=False)
            a, b = start_replicas(stack, config, env, tmp, 2, log_prefix="prices")
            yield {"a": a, "b": b, "ledger_url": pg}
    finally:
        clear_redis_prefix(prefix)


def route_auto(url: str) -> httpx.Response:
    r = httpx.post(url + "/v1/chat/completions", json=AUTO, timeout=10)
    assert r.status_code == 200, r.text
    return r


def prices(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/admin/prices", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def put_prices(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.put(url + "/admin/prices", headers=ADMIN, json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def entry(table: dict[str, Any], provider: str, model: str) -> dict[str, Any]:
    return next(p for p in table["prices"] if p["provider"] == provider and p["model"] == model)


def price_version_of(ledger_url: str, response: httpx.Response) -> int:
    rows = pg_rows(ledger_url, "SELECT price_version FROM ledger WHERE request_id = $1",
                   response.headers["x-gateway-request-id"])
    return int(rows[0]["price_version"])


def test_put_on_one_replica_is_in_force_on_the_other_within_a_second(replicas, vendors):
    a, b = replicas["a"], replicas["b"]
    # auto = quality >= 70: for a short prompt glm-3-turbo (0.001 / 0.001 per 1K) is the cheapest on both.
    assert route_auto(a.url).headers["x-gateway-provider"] == "zhipu"
    assert route_auto(b.url).headers["x-gateway-provider"] == "zhipu"
    before = prices(b.url)["version"]

    # hunyuan-standard, normally among the dearest (0.0045 / 0.005), becomes free.
    put = put_prices(a.url, {"prices": [{"provider": "hunyuan", "model": "hunyuan-standard",
                                         "input": "0", "output": "0"}]})
    published_at = time.monotonic()
    assert put["new_version"] is True and put["version"] > before
    assert entry(put, "hunyuan", "hunyuan-standard")["input"] == "0"

    while True:
        r = route_auto(b.url)
        if r.headers["x-gateway-provider"] == "hunyuan":
            break
        assert time.monotonic() - published_at < 1.0, "replica B still routes by the old prices after 1 s"
        time.sleep(0.02)
    assert time.monotonic() - published_at < 1.0
    table_b = prices(b.url)
    assert table_b["version"] == put["version"]
    assert entry(table_b, "hunyuan", "hunyuan-standard")["output"] == "0"
    assert entry(table_b, "zhipu", "glm-3-turbo")["input"] == entry(put, "zhipu", "glm-3-turbo")["input"]
    assert r.headers["x-gateway-cost"] == "0"
    assert price_version_of(replicas["ledger_url"], r) == put["version"]
    assert route_auto(a.url).headers["x-gateway-provider"] == "hunyuan"


def test_scheduled_change_takes_effect_on_both_replicas_on_time(replicas, vendors):
    a, b = replicas["a"], replicas["b"]
    # Start from a known table: hunyuan free (the previous test may not have run), then schedule qwen-long free
    # too; at equal cost the higher quality wins, so auto flips from hunyuan (78) to qwen-long (80) at that instant.
    put_prices(a.url, {"prices": [{"provider": "hunyuan", "model": "hunyuan-standard", "input": "0", "output": "0"}]})
    current = prices(a.url)["version"]
    effective = datetime.now(timezone.utc) + timedelta(seconds=2)
    scheduled = put_prices(b.url, {
        "effective_from": effective.isoformat(),
        "prices": [{"provider": "dashscope", "model": "qwen-long", "input": "0", "output": "0"}],
    })
    assert scheduled["new_version"] is True
    new_version = scheduled["version"]
    assert new_version > current

    # Known to both replicas at once, but not in force yet.
    deadline = time.monotonic() + 1.0
    for url in (a.url, b.url):
        while not any(s["version"] == new_version for s in prices(url).get("scheduled", [])):
            assert time.monotonic() < deadline, f"{url} did not learn of the scheduled version within 1 s"
            time.sleep(0.02)
        assert prices(url)["version"] == current
    for url in (a.url, b.url):
        r = route_auto(url)
        assert r.headers["x-gateway-provider"] == "hunyuan"
        assert price_version_of(replicas["ledger_url"], r) == current

    # A moment before the instant: still the old table.
    lead = (effective - datetime.now(timezone.utc)).total_seconds() - 0.3
    assert lead > 0, "set-up took too long to test the moment before"
    time.sleep(lead)
    for url in (a.url, b.url):
        r = route_auto(url)
        if datetime.now(timezone.utc) < effective:  # answered before the instant, so it started before it
            assert r.headers["x-gateway-provider"] == "hunyuan"
            assert price_version_of(replicas["ledger_url"], r) == current

    # Just after it: the new one, on both, without a restart.
    time.sleep(max(0.0, (effective - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    for url in (a.url, b.url):
        r = route_auto(url)
        assert r.headers["x-gateway-provider"] == "dashscope", url
        assert r.headers["x-gateway-cost"] == "0"
        assert price_version_of(replicas["ledger_url"], r) == new_version
        table = prices(url)
        assert table["version"] == new_version
        assert entry(table, "dashscope", "qwen-long")["input"] == "0"
        assert entry(table, "hunyuan", "hunyuan-standard")["input"] == "0"  # the earlier change is kept

    history = httpx.get(a.url + "/admin/prices/history", params={"provider": "dashscope", "model": "qwen-long"},
                        headers=ADMIN, timeout=10).json()
    assert [v["input"] for v in history["versions"] if v["changed"]][-2:] == ["0.0005", "0"]
