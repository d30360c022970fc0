"""A real Prometheus (tests/deploy/prom.py) scrapes what gateway/metrics.py exports; every dashboard query answers.

The target is a loopback HTTP server exposing a fresh registry filled through `gateway.metrics.Metrics`, so the
series have exactly the names and labels the gateway exports. tests/e2e/test_metrics_e2e.py does the same against a
running `gateway serve` after real traffic.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from gateway.metrics import Metrics
from tests.deploy.prom import MISSING_REASON, Prometheus, find_binary, running_prometheus
from tests.deploy.promql import ALERTS, panel_queries, substitute


def _fill(metrics: Metrics) -> None:
    """One series or more for every metric, as a gateway that served a little traffic would have."""
    for outcome in ("success", "upstream_error", "client_error"):
        metrics.requests.labels("auto", "deepseek", "deepseek-v2", outcome).inc(3)
    for direction, tokens, cost in (("input", 1000, 0.001), ("cached_input", 200, 0.00002),
                                    ("cache_write", 300, 0.0003), ("output", 500, 0.001)):
        metrics.tokens.labels("deepseek", "deepseek-v2", "search", direction).inc(tokens)
        metrics.cost.labels("deepseek", "deepseek-v2", "search", direction, "CNY").inc(cost)
    metrics.duration.labels("deepseek", "deepseek-v2").observe(0.3)
    metrics.ttft.labels("deepseek", "deepseek-v2").observe(0.08)
    metrics.upstream_errors.labels("zhipu", "timeout").inc()
    metrics.fallbacks.labels("zhipu", "timeout").inc()
    metrics.price.labels("deepseek", "deepseek-v2", "input", "CNY").set(1)
    metrics.price.labels("deepseek", "deepseek-v2", "output", "CNY").set(2)
    metrics.price_version.set(3)
    metrics.provider_healthy.labels("deepseek").set(1)
    metrics.provider_healthy.labels("zhipu").set(0)
    metrics.budget_spent.labels("search", "CNY").set(9.5)
    metrics.budget_limit.labels("search", "CNY").set(10)
    metrics.savings.labels("search", "CNY").inc(0.02)
    metrics.record_cache_prediction("deepseek", "deepseek-v2", 900, 100, 50)
    metrics.ledger_pending.set(2)
    metrics.feed_last_success.labels("https://prices.example.com/feed.json").set_to_current_time()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    if find_binary("prometheus") is None:
        pytest.skip(MISSING_REASON.format(name="prometheus"))
    metrics = Metrics(CollectorRegistry())
    _fill(metrics)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        with running_prometheus(f"http://127.0.0.1:{server.server_port}/metrics", scrape_interval="1s",
                                rule_files=[ALERTS]) as prom:
            prom.wait_for_scrapes(3)
            yield prom
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_scrapes_the_target_with_the_gateway_labels(prometheus: Prometheus) -> None:
    (target,) = prometheus.targets()
    assert target["health"] == "up"
    result = prometheus.query('sum by (team, currency) (gateway_cost_total{direction="output"})')
    assert [(r["metric"], float(r["value"][1])) for r in result] == [({"team": "search", "currency": "CNY"}, 0.001)]
    written = prometheus.query('sum by (direction) (gateway_tokens_total{direction="cache_write"})')
    assert [(r["metric"], float(r["value"][1])) for r in written] == [({"direction": "cache_write"}, 300)]


def test_every_dashboard_panel_query_returns_data(prometheus: Prometheus) -> None:
    # 10s windows hold several 1s scrapes; `$__range` covers the whole (short) life of this Prometheus.
    empty = []
    for query in panel_queries():
        result = prometheus.query(substitute(query.expr, rate_interval="10s", range_="1m"))
        if not result:
            empty.append(query.where)
    assert not empty, f"no data for: {empty}"


def test_dashboard_budget_ratio_and_quantile_compute_real_values(prometheus: Prometheus) -> None:
    (ratio,) = prometheus.query('max by (team, currency) (gateway_budget_spent{team=~".*"}) '
                                '/ max by (team, currency) (gateway_budget_limit{team=~".*"} > 0)')
    assert float(ratio["value"][1]) == pytest.approx(0.95)
    (health,) = prometheus.query('min by (provider) (gateway_provider_healthy{provider="zhipu"})')
    assert float(health["value"][1]) == 0


def test_the_alert_rules_load_into_a_real_prometheus(prometheus: Prometheus) -> None:
    rules = prometheus.rules()
    assert len([r for r in rules if r["type"] == "alerting"]) >= 7
    assert all(r["health"] in ("ok", "unknown") for r in rules), [(r["name"], r.get("lastError")) for r in rules]
