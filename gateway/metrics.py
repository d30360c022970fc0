"""Every Prometheus metric of the gateway, defined once (contract section 6), on a registry that is passed in.

Label values are bounded: providers, models and teams come from configuration or issued keys, never from client
text (an unknown model name a client sends is recorded as `UNKNOWN_MODEL`).
Money enters as `Decimal` and becomes a float only here, as a Prometheus sample.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.domain import Cost, Usage

UNKNOWN_MODEL = "unknown"
NO_PROVIDER = "none"

_CHILDREN_MAX = 10_000  # label values are bounded (see above); this only bounds a caller that is not


def _children(metric: Any) -> Any:
    """`metric.labels(*values)`, cached per label tuple: `labels()` validates, converts and locks on every call (~13 % of
    a request's CPU with nine calls per request). A child is never removed from these metrics, so the cached child is
    the one `labels()` would return."""
    cache: dict[tuple[str, ...], Any] = {}
    labels = metric.labels

    def child(*values: str) -> Any:
        c = cache.get(values)
        if c is None:
            if len(cache) >= _CHILDREN_MAX:
                cache.clear()
            c = cache[values] = labels(*values)
        return c

    return child


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
        # Prompt-cache predictions against what vendors reported, in tokens (gateway/cache): hit + miss = predicted,
        # hit + unpredicted = what the vendor served from its cache.
        self.cache_predicted = Counter("gateway_cache_predicted_tokens_total",
                                       "Predicted prompt-cache tokens by outcome (hit, miss, unpredicted)",
                                       ["provider", "model", "outcome"], registry=r)
        # Cached children of the metrics the request path updates (same series as `.labels(...)`).
        self.requests_child = _children(self.requests)
        self.duration_child = _children(self.duration)
        self.ttft_child = _children(self.ttft)
        self.upstream_errors_child = _children(self.upstream_errors)
        self.fallbacks_child = _children(self.fallbacks)
        self.savings_child = _children(self.savings)
        self.cache_predicted_child = _children(self.cache_predicted)
        self._usage: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        self._cache_write: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    # ---- the request path's updates, through cached children -----------------------------------------------------

    def record_request(self, route: str, provider: str, model: str, outcome: str) -> None:
        """gateway_requests_total{route, provider, model, outcome} += 1"""
        self.requests_child(route, provider, model, outcome).inc()

    def observe_duration(self, provider: str, model: str, seconds: float) -> None:
        self.duration_child(provider, model).observe(seconds)

    def observe_ttft(self, provider: str, model: str, seconds: float) -> None:
        self.ttft_child(provider, model).observe(seconds)

    def record_upstream_error(self, provider: str, kind: str) -> None:
        self.upstream_errors_child(provider, kind).inc()

    def record_fallback(self, from_provider: str, reason: str) -> None:
        self.fallbacks_child(from_provider, reason).inc()

    def record_cache_prediction(self, provider: str, model: str, hit: int, miss: int, unpredicted: int) -> None:
        """gateway_cache_predicted_tokens_total{provider, model, outcome} += tokens, per outcome."""
        for outcome, tokens in (("hit", hit), ("miss", miss), ("unpredicted", unpredicted)):
            child = self.cache_predicted_child(provider, model, outcome)  # every outcome's series exists
            if tokens:
                child.inc(tokens)

    def _usage_children(self, provider: str, model: str, team: str, currency: str) -> tuple[Any, ...]:
        key = (provider, model, team, currency)
        c = self._usage.get(key)
        if c is None:
            if len(self._usage) >= _CHILDREN_MAX:
                self._usage.clear()
            c = self._usage[key] = tuple(
                (self.tokens.labels(provider, model, team, direction),
                 self.cost.labels(provider, model, team, direction, currency))
                for direction in ("input", "cached_input", "output"))
        return c

    def _cache_write_children(self, provider: str, model: str, team: str, currency: str) -> tuple[Any, Any]:
        key = (provider, model, team, currency)
        c = self._cache_write.get(key)
        if c is None:
            if len(self._cache_write) >= _CHILDREN_MAX:
                self._cache_write.clear()
            c = self._cache_write[key] = (self.tokens.labels(provider, model, team, "cache_write"),
                                          self.cost.labels(provider, model, team, "cache_write", currency))
        return c

    def record_usage(self, provider: str, model: str, team: str, usage: Usage, cost: Cost,
                     baseline_cost: Decimal | None) -> None:
        currency = cost.reporting_currency
        (t_in, c_in), (t_cached, c_cached), (t_out, c_out) = self._usage_children(provider, model, team, currency)
        # Every series already exists (labels() above created it, so dashboards see free models and every
        # direction); a zero increment would change nothing and costs a lock.
        if usage.input_tokens:
            t_in.inc(usage.input_tokens)
        if cost.input:
            c_in.inc(float(cost.input_reporting))
        if usage.cached_input_tokens:
            t_cached.inc(usage.cached_input_tokens)
        if cost.cached_input:
            c_cached.inc(float(cost.cached_input_reporting))
        if usage.output_tokens:
            t_out.inc(usage.output_tokens)
        if cost.output:
            c_out.inc(float(cost.output_reporting))
        if usage.cache_write_tokens or cost.cache_write:
            # Made on first use: most vendors report no cache writes, and their series would stay at zero.
            t_write, c_write = self._cache_write_children(provider, model, team, currency)
            if usage.cache_write_tokens:
                t_write.inc(usage.cache_write_tokens)
            if cost.cache_write:
                c_write.inc(float(cost.cache_write_reporting))
        if baseline_cost is not None:
            saved = baseline_cost - cost.total_reporting
            child = self.savings_child(team, currency)  # the series exists from the first request on
            if saved > 0:
                child.inc(float(saved))
