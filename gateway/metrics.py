"""Every Prometheus metric of the gateway, defined once (contract section 6), on a registry that is passed in.

Label values are bounded: providers, models and teams come from configuration or issued keys, never from client
text (an unknown model name a client sends is recorded as `UNKNOWN_MODEL`).
Money enters as `Decimal` and becomes a float only here, as a Prometheus sample.
"""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.domain import Cost, Usage

UNKNOWN_MODEL = "unknown"
NO_PROVIDER = "none"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("gateway_requests_total", "Client requests by outcome",
                                ["route", "provider", "model", "outcome"], registry=r)
        self.tokens = Counter("gateway_tokens_total", "Tokens metered",
                              ["provider", "model", "team", "direction"], registry=r)
        self.cost = Counter("gateway_cost_total", "Cost in the reporting currency",
                            ["provider", "model", "team", "direction", "currency"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "Request duration, upstream included",
                                  ["provider", "model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Time to first streamed token",
                              ["provider", "model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors_total", "Failed upstream attempts",
                                       ["provider", "kind"], registry=r)
        self.fallbacks = Counter("gateway_fallbacks_total", "Moves to the next deployment after a failure",
                                 ["from_provider", "reason"], registry=r)
        self.price = Gauge("gateway_price_per_million_tokens", "Live base price per 1M tokens",
                           ["provider", "model", "direction", "currency"], registry=r,
                           multiprocess_mode="mostrecent")
        self.price_version = Gauge("gateway_price_table_version", "Price version in force", registry=r,
                                   multiprocess_mode="max")
        self.provider_healthy = Gauge("gateway_provider_healthy", "1 healthy, 0 cooling down",
                                      ["provider"], registry=r, multiprocess_mode="livemostrecent")
        self.budget_spent = Gauge("gateway_budget_spent", "Team spend in the current budget period",
                                  ["team", "currency"], registry=r, multiprocess_mode="mostrecent")
        self.budget_limit = Gauge("gateway_budget_limit", "Team budget for the current period",
                                  ["team", "currency"], registry=r, multiprocess_mode="mostrecent")
        self.savings = Counter("gateway_savings_total", "Baseline cost minus actual cost",
                               ["team", "currency"], registry=r)
        self.ledger_pending = Gauge("gateway_ledger_pending_rows", "Ledger rows not yet durable", registry=r,
                                    multiprocess_mode="livesum")
        self.feed_last_success = Gauge("gateway_price_feed_last_success_timestamp_seconds",
                                       "Last successful poll of a price feed", ["feed"], registry=r,
                                       multiprocess_mode="max")

    def record_usage(self, provider: str, model: str, team: str, usage: Usage, cost: Cost,
                     baseline_cost: Decimal | None) -> None:
        currency = cost.reporting_currency
        for direction, tokens, amount in (
            ("input", usage.input_tokens, cost.input_reporting),
            ("cached_input", usage.cached_input_tokens, cost.cached_input_reporting),
            ("output", usage.output_tokens, cost.output_reporting),
        ):
            # Zero increments still create the series, so dashboards see free models and every direction.
            self.tokens.labels(provider, model, team, direction).inc(tokens)
            self.cost.labels(provider, model, team, direction, currency).inc(float(amount))
        if baseline_cost is not None:
            saved = baseline_cost - cost.total_reporting
            if saved > 0:
                self.savings.labels(team, currency).inc(float(saved))
            else:
                self.savings.labels(team, currency).inc(0)
