"""The health page's numbers come from the process's own Prometheus registry; recent rates are differences."""

from __future__ import annotations

from gateway.console.health import snapshot, summarize
from gateway.metrics import Metrics


def test_rates_over_the_window_are_differences_of_two_readings() -> None:
    m = Metrics()
    m.record_request("auto", "deepseek", "deepseek-v2", "success")
    m.record_upstream_error("zhipu", "timeout")
    then = snapshot(m.registry)
    for _ in range(3):
        m.record_request("auto", "deepseek", "deepseek-v2", "success")
    m.record_upstream_error("zhipu", "http_5xx")
    m.record_fallback("zhipu", "http_5xx")
    m.record_request("auto", "zhipu", "glm-3-turbo", "upstream_error")
    m.ledger_pending.set(4)
    health = summarize(["deepseek", "zhipu", "hunyuan"], frozenset({"zhipu"}), snapshot(m.registry), then, 300.0)
    rows = {p.name: p for p in health.providers}
    assert rows["deepseek"].requests == 3 and rows["deepseek"].healthy and rows["deepseek"].error_rate == 0
    assert not rows["zhipu"].healthy and rows["zhipu"].errors == 1 and rows["zhipu"].fallbacks == 1
    assert rows["zhipu"].error_rate == 0.5
    assert rows["hunyuan"].error_rate is None
    assert health.outcomes == {"success": 3, "upstream_error": 1}
    assert health.fallbacks_by_reason == {"http_5xx": 1}
    assert health.ledger["gateway_ledger_pending_rows"] == 4


def test_without_an_earlier_reading_the_numbers_are_since_start() -> None:
    m = Metrics()
    m.record_request("auto", "deepseek", "deepseek-v2", "success")
    health = summarize(["deepseek"], frozenset(), snapshot(m.registry), None, None)
    assert health.window_s is None and health.providers[0].requests == 1
