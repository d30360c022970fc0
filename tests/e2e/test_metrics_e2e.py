"""Metrics end to end (contract sections 5, 6 and 8; issue 6): what a running gateway exports after real traffic.

- Every metric of contract section 6 is in `/metrics` with exactly its label set, parsed by prometheus-client's
  own text parser, and label values stay bounded (no client text, key ids or request ids).
- `gateway_cost_total`, `gateway_tokens_total` (and `gateway_savings_total`) add up to the ledger, in one process
  and in `gateway serve --workers 2` (whose `/metrics` covers both workers), and a restart does not double count.
- A real Prometheus scrapes a `gateway serve` process and every Grafana panel query answers with data.
- `/healthz` and `/readyz` (503 while the configured Redis or PostgreSQL is unreachable, 200 again after).

Traffic goes to the simulated vendors (gateway/demo/vendors.py); a price feed in the gateway's own format is served
from a loopback HTTP server so the feed freshness gauge exists too.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.vendors import VendorCluster, env_for
from tests.deploy.contract import CONTRACT_METRICS
from tests.deploy.prom import MISSING_REASON, find_binary, running_prometheus
from tests.deploy.promql import panel_queries, substitute
from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows
from tests.e2e.procs import (
    clear_redis_prefix,
    demo_data,
    fresh_postgres,
    redis_prefix,
    serve,
    write_config,
)

ADMIN = {"authorization": "Bearer demo-admin-key"}
UNKNOWN_MODEL = "no-such-model-e2e-7f3a"  # a client's invented model name: must never become a label value
USER_TEXT = "user-text-9c1d"  # in every prompt: must never become a label value
TEAM = "search"
DIRECTIONS = ("input", "cached_input", "cache_write", "output")

# The feed serves the demo's own price for one deployment: polling it succeeds and changes nothing (no new version),
# which keeps every cost in this file at the config's prices.
FEED_BODY = b"""# gateway price-file format (the shape of GET /admin/prices)
prices:
  - {provider: deepseek, model: deepseek-v2, currency: CNY, per: 1K, input: "0.001", output: "0.002"}
"""
FEED_PATH = "/prices/feed.yaml"


# ------------------------------------------------------------------------------------------------ helpers

class _FeedHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != FEED_PATH:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "application/yaml")
        self.send_header("content-length", str(len(FEED_BODY)))
        self.end_headers()
        self.wfile.write(FEED_BODY)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Feed:
    port: int

    @property
    def url(self) -> str:
        """As configured: with credentials and a query, which the `feed` label must not carry."""
        return f"http://feeduser:feedpass-e2e@127.0.0.1:{self.port}{FEED_PATH}?token=feedtoken-e2e"

    @property
    def label(self) -> str:
        return f"http://127.0.0.1:{self.port}{FEED_PATH}"


@pytest.fixture(scope="module")
def feed() -> Iterator[Feed]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FeedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Feed(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def with_feed(feed: Feed, then: Callable[[dict[str, Any]], None] | None = None) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["price_feeds"] = [{"url": feed.url, "format": "gateway", "interval_s": 300}]
        if then is not None:
            then(data)
    return edit


@dataclass
class Traffic:
    key_id: str = ""
    key: str = ""
    request_ids: list[str] = field(default_factory=list)
    ledger_rows: int = 0  # requests that got a ledger row (all but the unknown model)


def _chat(c: httpx.Client, model: str, key: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": f"hello {USER_TEXT}"}], "max_tokens": 20,
            **extra}
    return c.post("/v1/chat/completions", json=body, headers=headers)


def drive(url: str, vendors: VendorCluster, traffic: Traffic | None = None) -> Traffic:
    """The scripted traffic: successes for two teams, a fallback, two kinds of client error, a free model, a stream
    with a first token, an embedding; a team budget and a budgeted key. Safe to run again (adds to `traffic`)."""
    t = traffic or Traffic()
    with httpx.Client(base_url=url, timeout=30) as c:
        def ok(r: httpx.Response, status: int = 200) -> httpx.Response:
            assert r.status_code == status, r.text
            t.request_ids.append(r.headers["x-gateway-request-id"])
            return r

        if not t.key:
            r = c.put(f"/admin/teams/{TEAM}", json={"budget": "100", "budget_period": "month"}, headers=ADMIN)
            assert r.status_code == 200, r.text
            r = c.post("/admin/keys", json={"team": TEAM, "budget": "50", "budget_period": "month"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            t.key_id, t.key = r.json()["id"], r.json()["key"]
        ok(_chat(c, "auto", t.key))  # team `search`
        ok(_chat(c, "deepseek-v2"))  # no key: team `default`
        vendors.control("zhipu", "error_500", count=1)  # auto's cheapest (glm-3-turbo) fails once: fallback
        assert ok(_chat(c, "auto", t.key)).headers["x-gateway-attempts"] == "2"
        ok(_chat(c, UNKNOWN_MODEL), 404)  # client_error before any upstream: no ledger row
        vendors.control("deepseek", "error_400", count=1)  # the vendor refuses the request: client_error
        ok(_chat(c, "deepseek-v2", t.key), 400)
        free = ok(_chat(c, "cheap", t.key))
        assert free.headers["x-gateway-provider"] == "qianfan" and Decimal(free.headers["x-gateway-cost"]) == 0
        with c.stream("POST", "/v1/chat/completions", headers={"authorization": f"Bearer {t.key}"},
                      json={"model": "premium", "messages": [{"role": "user", "content": USER_TEXT}],
                            "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}) as s:
            assert s.status_code == 200
            t.request_ids.append(s.headers["x-gateway-request-id"])
            assert "[DONE]" in "".join(s.iter_text())
        ok(c.post("/v1/embeddings", json={"model": "embed", "input": f"embed {USER_TEXT}"},
                  headers={"authorization": f"Bearer {t.key}"}))
    t.ledger_rows += 7
    return t


Families = dict[str, Any]


def scrape(url: str) -> tuple[str, Families]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def family(families: Families, name: str) -> Any:
    """The parser names a counter's family without `_total`."""
    fam = families.get(name) or families.get(name.removesuffix("_total"))
    assert fam is not None, f"{name} missing from /metrics (have {sorted(families)})"
    return fam


def samples(families: Families, name: str, suffix: str = "") -> list[Any]:
    return [s for s in family(families, name).samples if s.name == name + suffix]


def assert_contract_families(families: Families, *, feed_label: str | None) -> None:
    """Every metric of contract section 6 present, with its type and exactly its labels."""
    for name, (kind, labels) in CONTRACT_METRICS.items():
        fam = family(families, name)
        assert fam.type == kind, (name, fam.type)
        real = [s for s in fam.samples if not s.name.endswith("_created")]
        assert real, f"{name}: no samples after the scripted traffic"
        for s in real:
            got = set(s.labels) - ({"le"} if s.name.endswith("_bucket") else set())
            assert got == set(labels), (s.name, s.labels)
    if feed_label is not None:
        feeds = {s.labels["feed"] for s in samples(families, "gateway_price_feed_last_success_timestamp_seconds")}
        assert feeds == {feed_label}


def assert_bounded_labels(text: str, families: Families, traffic: Traffic, config: dict[str, Any]) -> None:
    """Label values come from configuration and issued keys' teams, never from what a client sent."""
    for leaked in (UNKNOWN_MODEL, USER_TEXT, traffic.key_id, traffic.key, "feedpass", "feedtoken",
                   *traffic.request_ids):
        assert leaked not in text, f"{leaked!r} appears in /metrics"
    providers = set(config["providers"])
    models = {d["model"] for d in config["deployments"]}
    allowed = {
        "provider": providers | {"none"}, "from_provider": providers,
        "model": models | {"none"}, "route": set(config["routes"]) | models | {"unknown"},
        "team": {"default", TEAM}, "currency": {"CNY"}, "direction": set(DIRECTIONS),
        "outcome": {"success", "upstream_error", "client_error", "no_route", "budget_exceeded", "rate_limited",
                    "hit", "miss", "unpredicted"},  # (the last three: gateway_cache_predicted_tokens_total)
        "kind": {"timeout", "connect", "rate_limited", "http_5xx", "account", "http_4xx", "bad_response"},
    }
    allowed["reason"] = allowed["kind"]
    for name in CONTRACT_METRICS:
        for s in family(families, name).samples:
            for label, value in s.labels.items():
                if label in allowed:
                    assert value in allowed[label], (s.name, label, value)


def metric_sums(families: Families) -> dict[str, Any]:
    cost = {d: 0.0 for d in DIRECTIONS}
    tokens = {d: 0.0 for d in DIRECTIONS}
    for s in samples(families, "gateway_cost_total"):
        cost[s.labels["direction"]] += s.value
    for s in samples(families, "gateway_tokens_total"):
        tokens[s.labels["direction"]] += s.value
    savings = sum(s.value for s in samples(families, "gateway_savings_total"))
    return {"cost": cost, "tokens": tokens, "savings": savings}


def _money(v: Any) -> Decimal:
    return Decimal(0) if v is None else Decimal(str(v))


def ledger_sums(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cost = {d: sum((_money(r[f"{d}_cost_reporting"]) for r in rows), Decimal(0)) for d in DIRECTIONS}
    tokens = {d: sum(int(r[f"{d}_tokens"]) for r in rows) for d in DIRECTIONS}
    savings = sum((max(_money(r["baseline_cost"]) - _money(r["total_cost_reporting"]), Decimal(0))
                   for r in rows if r["baseline_cost"] is not None), Decimal(0))
    return {"cost": cost, "tokens": tokens, "savings": savings}


def assert_sums_equal(metrics: dict[str, Any], ledger: dict[str, Any]) -> None:
    for d in DIRECTIONS:
        # Only the float rounding of the Prometheus samples is tolerated; tokens are exact.
        assert metrics["cost"][d] == pytest.approx(float(ledger["cost"][d]), rel=1e-9, abs=1e-12), d
        assert metrics["tokens"][d] == ledger["tokens"][d], d
    assert metrics["savings"] == pytest.approx(float(ledger["savings"]), rel=1e-9, abs=1e-12)
    assert sum(ledger["cost"].values()) > 0 and ledger["tokens"]["input"] > 0  # the comparison is not 0 == 0


def wait_for_feed(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        _, fams = scrape(url)
        fam = fams.get("gateway_price_feed_last_success_timestamp_seconds")
        if fam is not None and fam.samples:
            return
        assert time.monotonic() < deadline, "the price feed was never polled successfully"
        time.sleep(0.05)


def pg_rows(url: str) -> list[dict[str, Any]]:
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM ledger ORDER BY id")]
        finally:
            await conn.close()

    return asyncio.run(run())


def settled_rows(read: Callable[[], list[dict[str, Any]]], count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The ledger once it has `count` rows and none still in flight (streams are billed when they end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = read()
        if len(rows) >= count and all(r["status"] != "in_flight" for r in rows):
            return rows
        assert time.monotonic() < deadline, f"ledger not settled: {len(rows)} rows, want {count}"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ 1. one process

def test_every_contract_metric_and_label_set_after_scripted_traffic_and_sums_equal_the_ledger(
        fresh_vendors: VendorCluster, feed: Feed) -> None:
    config = demo_config(fresh_vendors, with_feed(feed))
    with GatewayThread(config) as gw:
        traffic = drive(gw.url, fresh_vendors)
        rows = settled_rows(lambda: ledger_rows(gw), traffic.ledger_rows)
        wait_for_feed(gw.url)
        text, fams = scrape(gw.url)

    assert len(rows) == traffic.ledger_rows
    assert_contract_families(fams, feed_label=feed.label)
    data = demo_data()
    assert_bounded_labels(text, fams, traffic, data)

    # The traffic is visible in the values, not only as series.
    requests = {(s.labels["route"], s.labels["provider"], s.labels["outcome"]): s.value
                for s in samples(fams, "gateway_requests_total")}
    assert requests[("unknown", "none", "client_error")] == 1  # the unknown model, collapsed
    assert requests[("deepseek-v2", "deepseek", "client_error")] == 1  # the vendor's 400
    assert requests[("cheap", "qianfan", "success")] == 1
    errors = {(s.labels["provider"], s.labels["kind"]): s.value for s in samples(fams, "gateway_upstream_errors_total")}
    assert errors == {("zhipu", "http_5xx"): 1, ("deepseek", "http_4xx"): 1}
    fallbacks = {(s.labels["from_provider"], s.labels["reason"]): s.value
                 for s in samples(fams, "gateway_fallbacks_total")}
    assert fallbacks == {("zhipu", "http_5xx"): 1}
    free = [s for s in samples(fams, "gateway_cost_total") if s.labels["provider"] == "qianfan"]
    assert free and all(s.value == 0 for s in free)  # a free model still has its (zero) cost series
    ttft = [s for s in samples(fams, "gateway_time_to_first_token_seconds", "_count")]
    assert sum(s.value for s in ttft) == 1  # one stream
    spent = {s.labels["team"]: s.value for s in samples(fams, "gateway_budget_spent")}
    limit = {s.labels["team"]: s.value for s in samples(fams, "gateway_budget_limit")}
    assert limit == {TEAM: 100.0} and set(spent) == {TEAM}
    team_cost = sum(_money(r["total_cost_reporting"]) for r in rows if r["team"] == TEAM)
    assert spent[TEAM] == pytest.approx(float(team_cost), rel=1e-9)
    healthy = {s.labels["provider"]: s.value for s in samples(fams, "gateway_provider_healthy")}
    assert healthy == {p: 1.0 for p in data["providers"]}
    assert [s.value for s in samples(fams, "gateway_ledger_pending_rows")] == [0]
    # The version in force is the one the requests were priced with (the feed, at the same prices, made none).
    assert [s.value for s in samples(fams, "gateway_price_table_version")] == [max(r["price_version"] for r in rows)]
    prices = {(s.labels["provider"], s.labels["model"], s.labels["direction"]): s.value
              for s in samples(fams, "gateway_price_per_million_tokens")}
    assert prices[("deepseek", "deepseek-v2", "output")] == 2.0  # 0.002 per 1K

    assert_sums_equal(metric_sums(fams), ledger_sums(rows))


# ----------------------------------------------------------------------------- 2. gateway serve --workers 2

def _serve_config(tmp_path: Path, vendors: VendorCluster, feed: Feed, ledger_url: str,
                  metrics_dir: Path | None = None) -> tuple[Path, dict[str, str]]:
    data = demo_data()
    with_feed(feed)(data)
    path = write_config(tmp_path / "gateway.yaml", data)
    env = {**env_for(vendors), "GATEWAY_LEDGER_URL": ledger_url}
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return path, env


def _spread(url: str, want_replicas: int, read: Callable[[], list[dict[str, Any]]], rounds: int = 10) -> int:
    """Concurrent requests on fresh connections until the ledger shows `want_replicas` workers; requests sent."""
    sent = 0

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:  # one connection each: the kernel spreads the accepts
            r = c.post("/v1/chat/completions", json={
                "model": "deepseek-v2" if i % 2 else "auto", "max_tokens": 8 + i % 5,
                "messages": [{"role": "user", "content": f"spread {i}"}]})
            assert r.status_code == 200, r.text

    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            list(pool.map(one, range(sent, sent + 8)))
            sent += 8
            if len({r["replica_id"] for r in read()}) >= want_replicas:
                return sent
    return sent


def per_worker_families(metrics_dir: Path, scratch: Path) -> dict[int, Families]:
    """What each worker process has recorded in the multiprocess directory, merged one process at a time."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    by_pid: dict[int, list[Path]] = {}
    for f in metrics_dir.glob("*.db"):
        by_pid.setdefault(int(f.stem.rsplit("_", 1)[1]), []).append(f)
    out = {}
    for pid, files in by_pid.items():
        one = scratch / str(pid)
        shutil.rmtree(one, ignore_errors=True)
        one.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, one / f.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one))
        out[pid] = {m.name: m for m in registry.collect()}
    return out


def wait_every_worker_publishes_state_gauges(metrics_dir: Path, scratch: Path, workers: int,
                                            timeout_s: float = 10.0) -> None:
    """Every worker keeps its own share of the state gauges current, not only the one that answers a scrape
    (before this, a worker that had not answered a scrape had no `gateway_provider_healthy` at all, and its
    `gateway_ledger_pending_rows` stayed at whatever it was when it last answered one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers_seen = per_worker_families(metrics_dir, scratch)
        publishing = [pid for pid, fams in workers_seen.items()
                      if fams.get("gateway_provider_healthy") and fams["gateway_provider_healthy"].samples]
        if len(publishing) >= workers:
            return
        assert time.monotonic() < deadline, (
            f"only {len(publishing)} of {len(workers_seen)} worker(s) publish gateway_provider_healthy")
        time.sleep(0.1)


def test_workers_2_sums_equal_the_ledger_and_a_restart_does_not_double_count(
        tmp_path: Path, fresh_vendors: VendorCluster, feed: Feed) -> None:
    metrics_dir = tmp_path / "prometheus-multiproc"
    with fresh_postgres() as pg:
        config_path, env = _serve_config(tmp_path, fresh_vendors, feed, pg, metrics_dir)
        read = lambda: pg_rows(pg)
        with serve(config_path, env, tmp_path / "serve-1.log", workers=2) as gw:
            # Before any scrape: both workers already publish their state gauges.
            wait_every_worker_publishes_state_gauges(metrics_dir, tmp_path / "per-worker", 2)
            traffic = drive(gw.url, fresh_vendors)
            expected = traffic.ledger_rows + _spread(gw.url, 2, read)
            rows = settled_rows(read, expected)
            assert len({r["replica_id"] for r in rows}) == 2, "both workers served requests"
            wait_for_feed(gw.url)
            # Each scrape is answered by one worker; every answer covers both (concurrent fresh connections, so
            # both workers answer some).
            with ThreadPoolExecutor(4) as pool:
                scrapes = list(pool.map(lambda _: scrape(gw.url), range(8)))
            for text, fams in scrapes:
                assert_contract_families(fams, feed_label=feed.label)
                assert_bounded_labels(text, fams, traffic, demo_data())
                assert_sums_equal(metric_sums(fams), ledger_sums(rows))
                assert [s.value for s in samples(fams, "gateway_ledger_pending_rows")] == [0]
            first_run = {r["replica_id"] for r in rows}
            old_files = {f.name for f in metrics_dir.iterdir()}
            assert old_files, "the workers wrote their metrics to PROMETHEUS_MULTIPROC_DIR"

        # Restart on the same directory and ledger: the old run's files are gone, counters start from zero.
        with serve(config_path, env, tmp_path / "serve-2.log", workers=2) as gw:
            _, fams = scrape(gw.url)
            for name in ("gateway_cost_total", "gateway_tokens_total", "gateway_requests_total"):
                assert name.removesuffix("_total") not in fams, f"{name} carried over from the previous run"
            assert not old_files & {f.name for f in metrics_dir.iterdir()}
            with httpx.Client(base_url=gw.url, timeout=30) as c:
                assert _chat(c, "deepseek-v2").status_code == 200
                assert _chat(c, "auto").status_code == 200
            rows = settled_rows(read, expected + 2)
            new_rows = [r for r in rows if r["replica_id"] not in first_run]
            assert len(new_rows) == 2
            _, fams = scrape(gw.url)
            assert_sums_equal(metric_sums(fams), ledger_sums(new_rows))


# ------------------------------------------------------------------------------------- 3. a real Prometheus

# Panels that need traffic this test cannot produce, with the reason. Every other panel must return data.
PANELS_WITHOUT_DATA: dict[str, str] = {}


def test_a_real_prometheus_scrapes_gateway_serve_and_every_dashboard_panel_returns_data(
        tmp_path: Path, fresh_vendors: VendorCluster, feed: Feed) -> None:
    if find_binary("prometheus") is None:
        pytest.skip(MISSING_REASON.format(name="prometheus"))
    config_path, env = _serve_config(tmp_path, fresh_vendors, feed, f"sqlite:///{tmp_path / 'ledger.db'}")
    with serve(config_path, env, tmp_path / "serve.log") as gw, \
            running_prometheus(gw.url + "/metrics", scrape_interval="1s") as prom:
        prom.wait_for_scrapes(1)
        # Two rounds a few scrapes apart: every counter and histogram then has an increase inside the window.
        traffic = drive(gw.url, fresh_vendors)
        prom.wait_for("gateway_time_to_first_token_seconds_count")
        time.sleep(1.2)
        drive(gw.url, fresh_vendors, traffic)
        rows = settled_rows(lambda: _sqlite_rows(tmp_path / "ledger.db"), traffic.ledger_rows)
        _, fams = scrape(gw.url)
        total = sum(s.value for s in samples(fams, "gateway_requests_total"))
        deadline = time.monotonic() + 15
        while float((prom.query("sum(gateway_requests_total)") or [{"value": [0, "0"]}])[0]["value"][1]) < total:
            assert time.monotonic() < deadline, "Prometheus did not scrape the second round"
            time.sleep(0.2)
        prom.wait_for_scrapes(2)

        # What Prometheus stored is what the gateway exported: the ledger's spend.
        (spend,) = prom.query("sum(gateway_cost_total)")
        assert float(spend["value"][1]) == pytest.approx(float(sum(ledger_sums(rows)["cost"].values())), rel=1e-9)

        empty, not_finite = [], []
        queries = panel_queries()
        assert queries
        for q in queries:
            if q.where in PANELS_WITHOUT_DATA:
                continue
            result = prom.query(substitute(q.expr, rate_interval="30s", range_="5m"))
            if not result:
                empty.append(q.where)
            elif not all(math.isfinite(float(r["value"][1])) for r in result):
                not_finite.append((q.where, [r["value"][1] for r in result]))
        assert not empty, f"dashboard panels without data: {empty}"
        assert not not_finite, f"dashboard panels without a number: {not_finite}"


def _sqlite_rows(path: Path) -> list[dict[str, Any]]:
    import sqlite3

    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]


# ------------------------------------------------------------------------------------- 4. healthz and readyz

class TcpForwarder:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, which the test can cut (port closed, connections reset) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.stalled = threading.Event()  # set: bytes are swallowed, the dependency hangs without an error
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener, self._stop = listener, threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True).start()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        listener.close()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if not self.stalled.is_set():
                    b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self._stop.set()
        time.sleep(0.1)  # the accept loop closes the listener
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@contextmanager
def _dependency(kind: str, tmp_path: Path) -> Iterator[tuple[TcpForwarder, Callable[[dict[str, Any]], None], str | None]]:
    if kind == "redis":
        prefix = redis_prefix()
        fwd = TcpForwarder(6379)

        def edit(data: dict[str, Any]) -> None:
            data["gateway"]["redis_url"] = f"redis://127.0.0.1:{fwd.port}/0"
            data["gateway"]["redis_prefix"] = prefix

        try:
            yield fwd, edit, None
        finally:
            fwd.cut()
            clear_redis_prefix(prefix)
    else:
        with fresh_postgres() as pg:
            fwd = TcpForwarder(5432)
            try:
                yield fwd, lambda data: None, pg.replace("127.0.0.1:5432", f"127.0.0.1:{fwd.port}")
            finally:
                fwd.cut()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_healthz_is_alive_and_readyz_follows_the_configured_dependency(
        kind: str, tmp_path: Path, fresh_vendors: VendorCluster) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    def strict(data: dict[str, Any]) -> None:
        edit(data)
        # Without a way to keep serving, a missing dependency is "not ready" (contract section 8): Redis in refuse
        # mode, the ledger without a writable spool directory. (Degraded but ready: tests/e2e/test_outages_e2e.py.)
        data["gateway"]["on_shared_state_unavailable"] = "refuse"
        data["gateway"]["spool_dir"] = str(blocker / "spool")

    with _dependency(kind, tmp_path) as (fwd, edit, ledger_url), \
            GatewayThread(demo_config(fresh_vendors, strict, ledger_url=ledger_url)) as gw:
        ready = httpx.get(gw.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        check = "redis" if kind == "redis" else "ledger"
        assert ready.json()["checks"][check] == "ok"

        fwd.stalled.set()  # the dependency hangs: readyz answers "not ready" in time, not hang with it
        # "timeout" is only reported by readyz's own per-check limit (1.5 s): it answered instead of hanging.
        hung = httpx.get(gw.url + "/readyz", timeout=10)
        assert hung.status_code == 503 and hung.json()["checks"][check] == "timeout", hung.text
        fwd.cut()  # the dependency goes away (port closed, open connections reset)
        fwd.stalled.clear()
        down = httpx.get(gw.url + "/readyz", timeout=10)
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["status"] == "not ready" and body["checks"][check] != "ok"
        assert str(fwd.port) not in down.text  # names the dependency, not its address
        alive = httpx.get(gw.url + "/healthz", timeout=10)
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}  # the process itself is fine

        fwd.open()  # back on the same port: ready again
        started = time.monotonic()
        deadline = started + 10
        while httpx.get(gw.url + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "readyz did not recover"
            time.sleep(0.1)
