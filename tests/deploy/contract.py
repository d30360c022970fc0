"""Contract section 6 as data: every metric the dashboard and the alert rules may use, with its labels.

Kept apart from gateway/metrics.py on purpose: `test_deploy_contract_metrics.py` checks that the code defines
exactly these, and the dashboard and alert tests check that they use nothing else.
"""

from __future__ import annotations

# name as queried in PromQL -> (type, labels)
CONTRACT_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gateway_requests_total": ("counter", ("route", "provider", "model", "outcome")),
    "gateway_tokens_total": ("counter", ("provider", "model", "team", "direction")),
    "gateway_cost_total": ("counter", ("provider", "model", "team", "direction", "currency")),
    "gateway_request_duration_seconds": ("histogram", ("provider", "model")),
    "gateway_time_to_first_token_seconds": ("histogram", ("provider", "model")),
    "gateway_upstream_errors_total": ("counter", ("provider", "kind")),
    "gateway_fallbacks_total": ("counter", ("from_provider", "reason")),
    "gateway_price_per_million_tokens": ("gauge", ("provider", "model", "direction", "currency")),
    "gateway_price_table_version": ("gauge", ()),
    "gateway_provider_healthy": ("gauge", ("provider",)),
    "gateway_budget_spent": ("gauge", ("team", "currency")),
    "gateway_budget_limit": ("gauge", ("team", "currency")),
    "gateway_savings_total": ("counter", ("team", "currency")),
    "gateway_ledger_pending_rows": ("gauge", ()),
    "gateway_price_feed_last_success_timestamp_seconds": ("gauge", ("feed",)),
    # issue 14 (cache-aware routing): predicted prompt-cache tokens against what vendors reported
    "gateway_cache_predicted_tokens_total": ("counter", ("provider", "model", "outcome")),
}

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = ("instance", "job")


def queryable_series() -> dict[str, tuple[str, ...]]:
    """Every series name PromQL can select for the contract metrics, with the labels it carries."""
    series: dict[str, tuple[str, ...]] = {}
    for name, (kind, labels) in CONTRACT_METRICS.items():
        if kind == "histogram":
            series[f"{name}_bucket"] = labels + ("le",)
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return {name: labels + TARGET_LABELS for name, labels in series.items()}
