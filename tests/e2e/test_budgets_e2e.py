"""Keys, budgets and rate limits across real `gateway serve` processes (issue 7).

Two replicas share one Redis and one PostgreSQL database; a third setup is a single process with no Redis and a
SQLite ledger. The simulated vendors count every request they receive, so "no refused request reached a vendor"
is checked against the vendor's own counter, and spend is checked against the ledger's own rows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import ExitStack, closing
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.decisions.pricing import expected_cost, unit_prices
from gateway.demo.vendors import VendorCluster, env_for
from gateway.http.parse import parse_chat
from gateway.tokens import TokenCounter
from tests.e2e.procs import (ServeProcess, clear_redis_prefix, demo_data, fresh_postgres, redis_prefix,
                             write_config)

ADMIN = {"Authorization": "Bearer demo-admin-key"}
REDIS_URL = "redis://127.0.0.1:6379/0"
PINNED_MODEL = "deepseek-v2"  # one deployment (deepseek, 0.001 / 0.002 CNY per 1K): its worst case is known
PINNED_PROVIDER = "deepseek"
MAX_TOKENS = 40
CONCURRENT = 200
FITS = 50


# ---- shared helpers (also used by test_secrets_e2e / test_prices_e2e) ------------------------------------------

def chat_body(model: str = PINNED_MODEL, text: str = "budget probe", max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


def worst_case(body: dict[str, Any], provider: str = PINNED_PROVIDER) -> Decimal:
    """The reservation the pipeline makes for `body` pinned to one deployment: Pipeline._worst_case, step by step
    (prompt estimated by the gateway's own counter, requested output at the output price, at the config's price)."""
    from gateway.config.load import load_config_data

    config = load_config_data(demo_data(), "e2e", env={})
    facts = parse_chat(json.dumps(body).encode(), {}, TokenCounter(),
                       config.gateway.default_expected_output_tokens).facts
    dep = next(d for d in config.deployments if d.provider == provider and d.model == body["model"])
    price = dep.price.to_price()
    from datetime import datetime, timezone

    up = unit_prices(price, facts.prompt_tokens, datetime.now(timezone.utc))
    fx = Decimal(1) if up.currency == config.gateway.reporting_currency else config.fx_rates[up.currency]
    return expected_cost(up, facts.prompt_tokens, facts.requested_output_tokens or 0, fx)


def create_key(url: str, team: str, **fields: Any) -> dict[str, Any]:
    r = httpx.post(url + "/admin/keys", headers=ADMIN, json={"team": team, **fields}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gateway_config(tmp: Path, vendors: VendorCluster, *, ledger_url: str, redis_prefix_: str | None,
                   require_api_key: bool = True, name: str = "gateway.yaml",
                   edit: Callable[[dict[str, Any]], None] | None = None) -> tuple[Path, dict[str, str]]:
    """config/demo.yaml pointed at the running vendors, the given ledger and (optionally) Redis; env for it."""
    data = demo_data()
    g = data["gateway"]
    g["ledger_url"] = ledger_url
    g["require_api_key"] = require_api_key
    if redis_prefix_ is not None:
        g["redis_url"] = REDIS_URL
        g["redis_prefix"] = redis_prefix_
    if edit is not None:
        edit(data)
    return write_config(tmp / name, data), env_for(vendors)


def start_replicas(stack: ExitStack, config: Path, env: dict[str, str], tmp: Path, n: int,
                   log_prefix: str = "replica") -> list[ServeProcess]:
    """`n` serve processes on one config, started one after another (the first migrates the database)."""
    procs = []
    for i in range(n):
        proc = ServeProcess(config, env, tmp / f"{log_prefix}-{'ab'[i] if i < 2 else i}.log")
        stack.callback(proc.stop)
        procs.append(proc.wait_ready())
    return procs


def pg_rows(ledger_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(ledger_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def sqlite_rows(ledger_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(ledger_url.removeprefix("sqlite:///"))) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql.replace("$1", "?"), args)]


def ledger_rows_for_key(ledger_url: str, key_id: str) -> list[dict[str, Any]]:
    sql = "SELECT * FROM ledger WHERE key_id = $1"
    return pg_rows(ledger_url, sql, key_id) if ledger_url.startswith("postgresql") else sqlite_rows(ledger_url, sql, key_id)


def metric_samples(url: str, family: str) -> list[Any]:
    """Samples of one metric family from /metrics (counter families are named without `_total` by the parser)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = []
    for fam in text_string_to_metric_families(text):
        if fam.name in (family, family.removesuffix("_total")):
            out += [s for s in fam.samples if s.name == family or s.name == family + "_total"
                    or (not family.endswith("_total") and s.name == family)]
    return out


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]  # type: ignore[no-any-return]


# ---- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(vendors: VendorCluster) -> VendorCluster:
    return vendors


@pytest.fixture(scope="module")
def shared(cluster: VendorCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two replicas on one Redis prefix and one fresh PostgreSQL database, keys required."""
    tmp = tmp_path_factory.mktemp("budgets-shared")
    prefix = redis_prefix()
    try:
        with fresh_postgres() as pg, ExitStack() as stack:
            config, env = gateway_config(tmp, cluster, ledger_url=pg, redis_prefix_=prefix)
            a, b = start_replicas(stack, config, env, tmp, 2)
            yield {"a": a, "b": b, "ledger_url": pg, "config": config, "env": env}
    finally:
        clear_redis_prefix(prefix)


# ---- the budget race --------------------------------------------------------------------------------------------

async def _burst(urls: list[str], key: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=bearer(key)) as client:
        start = asyncio.Event()

        async def one(i: int) -> httpx.Response:
            await start.wait()
            return await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body)

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0)
        start.set()  # every request is in flight at (nearly) the same moment
        return list(await asyncio.gather(*tasks))


def _budget_race(urls: list[str], ledger_url: str, cluster: VendorCluster, team: str) -> None:
    body = chat_body()
    worst = worst_case(body)
    assert worst > 0
    budget = worst * FITS
    key = create_key(urls[0], team, budget=str(budget), budget_period="day")
    cluster.reset()

    responses = asyncio.run(_burst(urls, key["key"], body, CONCURRENT))

    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    for r in refused:
        assert r.status_code == 429, r.text
        assert error_of(r)["code"] == "budget_exceeded"
        assert r.headers["x-should-retry"] == "false"
        assert key["key"] not in r.text
    # Limits round down and costs up, so exactly-50 may admit 49; far fewer would mean reservations leak. A few
    # more than 50 are fine when early requests settled below their worst case (the vendor counts fewer prompt
    # tokens than the gateway's estimate) before the last reservations were made: what must hold is the spend.
    assert len(ok) >= FITS - 5, f"only {len(ok)} admitted"
    assert all(r.headers["x-gateway-provider"] == PINNED_PROVIDER for r in ok)
    # No refused request reached a vendor: the vendor saw exactly the admitted ones (and nothing else did).
    assert cluster.stats(PINNED_PROVIDER)["requests"] == len(ok)
    assert sum(cluster.stats(p)["requests"] for p in cluster.vendors) == len(ok)

    rows = ledger_rows_for_key(ledger_url, key["id"])
    assert len(rows) == len(ok)
    assert all(r["status"] == "success" for r in rows)
    spent = sum((Decimal(str(r["total_cost_reporting"])) for r in rows), Decimal(0))
    assert spent <= budget, f"spent {spent} > budget {budget}"
    assert len(ok) <= budget / min(Decimal(str(r["total_cost_reporting"])) for r in rows)
    header_total = sum((Decimal(r.headers["x-gateway-cost"]) for r in ok), Decimal(0))
    assert header_total == spent
    # Every reply fits its reservation, so the budget really is what capped the burst.
    assert all(Decimal(r.headers["x-gateway-cost"]) <= worst for r in ok)

    # Settlement releases what a reservation did not use (the vendor counts fewer prompt tokens than the
    # gateway's estimate), so a few more may fit one by one; every replica admits exactly while the rest of the
    # budget covers a worst case, then refuses, still before any vendor.
    admitted = len(ok)
    for i in range(10):
        remaining = budget - spent
        r = httpx.post(urls[i % len(urls)] + "/v1/chat/completions", headers=bearer(key["key"]), json=body,
                       timeout=10)
        if remaining >= worst:
            assert r.status_code == 200, r.text
            spent += Decimal(r.headers["x-gateway-cost"])
            admitted += 1
        else:
            assert r.status_code == 429 and error_of(r)["code"] == "budget_exceeded"
            break
    else:
        pytest.fail("the budget never ran out")
    assert cluster.stats(PINNED_PROVIDER)["requests"] == admitted
    rows = ledger_rows_for_key(ledger_url, key["id"])
    assert len(rows) == admitted
    assert sum((Decimal(str(r["total_cost_reporting"])) for r in rows), Decimal(0)) == spent <= budget


def test_budget_holds_across_two_replicas_under_200_concurrent_requests(shared, cluster):
    _budget_race([shared["a"].url, shared["b"].url], shared["ledger_url"], cluster, "race-shared")
    for proc in (shared["a"], shared["b"]):
        assert "Traceback" not in proc.log()


def test_budget_holds_in_one_process_without_redis(cluster, tmp_path):
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    config, env = gateway_config(tmp_path, cluster, ledger_url=ledger, redis_prefix_=None)
    with ExitStack() as stack:
        (one,) = start_replicas(stack, config, env, tmp_path, 1)
        _budget_race([one.url], ledger, cluster, "race-local")
        assert "Traceback" not in one.log()


# ---- keys, rate limits, teams -----------------------------------------------------------------------------------

def test_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second(shared, cluster):
    a, b = shared["a"], shared["b"]
    key = create_key(a.url, "revocation")
    body = chat_body(max_tokens=5)
    # The other replica knows (and caches) the key before it is revoked.
    assert httpx.post(b.url + "/v1/chat/completions", headers=bearer(key["key"]), json=body, timeout=10).status_code == 200
    r = httpx.delete(f"{a.url}/admin/keys/{key['id']}", headers=ADMIN, timeout=10)
    assert r.status_code == 200 and r.json()["revoked"] is True
    revoked_at = time.monotonic()
    while True:
        r = httpx.post(b.url + "/v1/chat/completions", headers=bearer(key["key"]), json=body, timeout=10)
        if r.status_code == 401:
            break
        assert time.monotonic() - revoked_at < 1.0, "replica B still accepts a key revoked on A after 1 s"
        time.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.0
    # The same answer as for a key that never existed, and nothing about the key echoed.
    unknown = "gw-0123456789ab-" + "x" * 43
    r_unknown = httpx.post(b.url + "/v1/chat/completions", headers=bearer(unknown), json=body, timeout=10)
    assert r_unknown.status_code == 401
    assert error_of(r) == error_of(r_unknown)
    for text in (r.text, json.dumps(dict(r.headers))):
        assert key["key"] not in text and key["id"] not in text
    assert httpx.post(a.url + "/v1/chat/completions", headers=bearer(key["key"]), json=body,
                      timeout=10).status_code == 401


def test_rpm_limit_is_shared_by_replicas_and_says_when_to_retry(shared, cluster):
    a, b = shared["a"], shared["b"]
    key = create_key(a.url, "rpm-team", rpm=3)
    body = chat_body(max_tokens=5)
    cluster.reset()
    codes = [httpx.post(url + "/v1/chat/completions", headers=bearer(key["key"]), json=body, timeout=10).status_code
             for url in (a.url, b.url, a.url)]
    assert codes == [200, 200, 200]
    r = httpx.post(b.url + "/v1/chat/completions", headers=bearer(key["key"]), json=body, timeout=10)
    assert r.status_code == 429
    assert error_of(r)["code"] == "rate_limit_exceeded"
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert cluster.stats(PINNED_PROVIDER)["requests"] == 3  # the refused one never left the gateway


def test_team_is_carried_into_ledger_and_metrics(shared, cluster):
    a = shared["a"]
    key = create_key(a.url, "growth")
    for model in ("deepseek-v2", "glm-3-turbo"):
        r = httpx.post(a.url + "/v1/chat/completions", headers=bearer(key["key"]), json=chat_body(model, "hello"),
                       timeout=10)
        assert r.status_code == 200, r.text
    rows = ledger_rows_for_key(shared["ledger_url"], key["id"])
    assert len(rows) == 2 and {r["team"] for r in rows} == {"growth"}
    assert {r["provider"] for r in rows} == {"deepseek", "zhipu"}

    cost = [s for s in metric_samples(a.url, "gateway_cost_total") if s.labels.get("team") == "growth"]
    tokens = [s for s in metric_samples(a.url, "gateway_tokens_total") if s.labels.get("team") == "growth"]
    assert {s.labels["provider"] for s in cost} == {"deepseek", "zhipu"}
    assert {s.labels["direction"] for s in tokens} >= {"input", "output"}
    assert all(s.labels["currency"] == "CNY" for s in cost)
    expected_cost_total = sum((Decimal(str(r["total_cost_reporting"])) for r in rows), Decimal(0))
    assert abs(sum(s.value for s in cost) - float(expected_cost_total)) < 1e-12
    expected_tokens = sum(r["input_tokens"] + r["cached_input_tokens"] + r["output_tokens"] for r in rows)
    assert sum(s.value for s in tokens) == expected_tokens
