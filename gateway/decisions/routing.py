"""The router: which deployments may serve a request, cheapest first, and why the others may not.

A pure function over plain data: request facts, the candidate pool, the live price version, which providers are
cooling down and recent latencies. No I/O, no clock: `now` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Iterable, Mapping

from gateway.decisions.pricing import expected_cost, unit_prices
from gateway.domain import Deployment, DeploymentKey, PriceVersion, RequestFacts, UnitPrices

# Exclusion reasons, in the order they are checked (the first that applies is reported).
MODE = "mode"
PROVIDER_NOT_ALLOWED = "provider_not_allowed"
CONTEXT_LENGTH = "context_length"
MAX_OUTPUT = "max_output_tokens"
MIN_CONTEXT = "min_context"
QUALITY = "quality"
CAPABILITY = "capability"
NO_PRICE = "no_price"
COOLING_DOWN = "cooling_down"
MAX_COST = "max_cost"


@dataclass(frozen=True, slots=True)
class Candidate:
    deployment: Deployment
    expected_cost: Decimal  # reporting currency
    unit_prices: UnitPrices
    recent_latency_s: float | None


@dataclass(frozen=True, slots=True)
class Exclusion:
    deployment: Deployment
    reason: str
    detail: str

    def describe(self) -> str:
        return f"{self.deployment.provider}/{self.deployment.model}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Decision:
    candidates: tuple[Candidate, ...]  # ranked, best first
    excluded: tuple[Exclusion, ...]

    @property
    def all_context_length(self) -> bool:
        """True when every deployment was excluded because the request does not fit its context window."""
        return not self.candidates and bool(self.excluded) and all(e.reason == CONTEXT_LENGTH for e in self.excluded)


def _exclusion(d: Deployment, facts: RequestFacts, cooling: frozenset[str]) -> Exclusion | None:
    c = facts.constraints
    if d.mode != facts.mode:
        return Exclusion(d, MODE, f"serves {d.mode}, not {facts.mode}")
    if c.providers is not None and d.provider not in c.providers:
        return Exclusion(d, PROVIDER_NOT_ALLOWED, f"provider {d.provider} not in allowed providers")
    needed = facts.prompt_tokens + (facts.expected_output_tokens if facts.mode == "chat" else 0)
    if needed > d.context_window:
        return Exclusion(
            d, CONTEXT_LENGTH,
            f"needs {needed} tokens ({facts.prompt_tokens} prompt + {needed - facts.prompt_tokens} output), "
            f"context window is {d.context_window}",
        )
    out = facts.requested_output_tokens
    if out is not None and d.max_output_tokens is not None and out > d.max_output_tokens:
        return Exclusion(d, MAX_OUTPUT, f"requested {out} output tokens, max_output_tokens is {d.max_output_tokens}")
    if c.min_context is not None and d.context_window < c.min_context:
        return Exclusion(d, MIN_CONTEXT, f"context window {d.context_window} < min_context {c.min_context}")
    if c.min_quality is not None and d.quality < c.min_quality:
        return Exclusion(d, QUALITY, f"quality {d.quality} < min_quality {c.min_quality}")
    missing = facts.capabilities - d.capabilities
    if missing:
        return Exclusion(d, CAPABILITY, f"lacks {', '.join(sorted(missing))}")
    if d.provider in cooling:
        return Exclusion(d, COOLING_DOWN, f"provider {d.provider} is cooling down after failures")
    return None


def rank(
    facts: RequestFacts,
    pool: Iterable[Deployment],
    prices: PriceVersion,
    now: datetime,
    cooling: frozenset[str] = frozenset(),
    latency: Mapping[DeploymentKey, float] | None = None,
) -> Decision:
    """Rank `pool` for `facts`: lowest expected cost, then higher quality, then lower recent latency."""
    latency = latency or {}
    ranked: list[tuple[Decimal, int, float, str, str, Candidate]] = []
    excluded: list[Exclusion] = []
    max_cost = facts.constraints.max_cost
    for d in pool:
        why = _exclusion(d, facts, cooling)
        if why is not None:
            excluded.append(why)
            continue
        price = prices.prices.get(d.key)
        if price is None:
            excluded.append(Exclusion(d, NO_PRICE, "no price in the live price table"))
            continue
        up = unit_prices(price, facts.prompt_tokens, now)
        cost = expected_cost(up, facts.prompt_tokens, facts.expected_output_tokens, prices.fx(up.currency))
        if max_cost is not None and cost > max_cost:
            excluded.append(Exclusion(d, MAX_COST, f"expected cost {cost} > max_cost {max_cost}"))
            continue
        lat = latency.get(d.key)
        cand = Candidate(d, cost, up, lat)
        # Unknown latency sorts after known latencies; provider/model make the order total and stable.
        ranked.append((cost, -d.quality, lat if lat is not None else float("inf"), d.provider, d.model, cand))
    ranked.sort(key=lambda r: r[:5])
    return Decision(tuple(r[5] for r in ranked), tuple(excluded))


def explain(decision: Decision) -> str:
    """The excluded deployments and their reasons, one clause each, for error messages."""
    return "; ".join(e.describe() for e in decision.excluded)
