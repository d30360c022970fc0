"""The router: which deployments may serve a request, cheapest first, and why the others may not.

A pure function over plain data: request facts, the candidate pool, the live price version, which providers are
cooling down and recent latencies. No I/O, no clock: `now` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Iterable, Mapping

from gateway.decisions.pricing import _per_token, expected_cost, unit_prices
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


# Per price version (immutable), the parts of each flat price that do not depend on the request: its UnitPrices,
# the exponent shift of `per` and the FX rate. Keyed by id(); the version object is kept to make id reuse harmless.
_FLAT: dict[int, tuple[PriceVersion, dict[DeploymentKey, tuple[UnitPrices, Decimal]]]] = {}


def _flat_prices(prices: PriceVersion, now: datetime) -> dict[DeploymentKey, tuple[UnitPrices, Decimal]]:
    hit = _FLAT.get(id(prices))
    if hit is not None and hit[0] is prices:
        return hit[1]
    table = {}
    for key, price in prices.prices.items():
        if not price.tiers and not price.off_peak:  # the same unit prices for every request and time
            up = unit_prices(price, 0, now)
            table[key] = (up, prices.fx(up.currency))
    if len(_FLAT) >= 8:
        _FLAT.clear()
    _FLAT[id(prices)] = (prices, table)
    return table


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
    c = facts.constraints
    max_cost = c.max_cost
    mode, allowed, min_context, min_quality = facts.mode, c.providers, c.min_context, c.min_quality
    caps = facts.capabilities
    needed = facts.prompt_tokens + (facts.expected_output_tokens if facts.mode == "chat" else 0)
    out = facts.requested_output_tokens
    flat = _flat_prices(prices, now)
    all_prices = prices.prices
    prompt, expected = facts.prompt_tokens, facts.expected_output_tokens
    d_prompt, d_expected = Decimal(prompt), Decimal(expected)
    inf = float("inf")
    for d in pool:
        # The common case (eligible) in one expression; _exclusion names the reason only when one applies.
        if (d.mode != mode or (allowed is not None and d.provider not in allowed) or needed > d.context_window
                or (out is not None and d.max_output_tokens is not None and out > d.max_output_tokens)
                or (min_context is not None and d.context_window < min_context)
                or (min_quality is not None and d.quality < min_quality)
                or (caps and not caps <= d.capabilities) or (cooling and d.provider in cooling)):
            why = _exclusion(d, facts, cooling)
            if why is not None:
                excluded.append(why)
                continue
        key = (d.provider, d.model)
        pre = flat.get(key)
        if pre is not None:
            up, fx = pre
            # expected_cost(), inlined: the same operations in the same order, so the same Decimal.
            amount = d_prompt * up.input + d_expected * up.output
            if not amount:
                cost = Decimal(0)
            else:
                cost = _per_token(amount, up.per) * fx
        else:
            price = all_prices.get(key)
            if price is None:
                excluded.append(Exclusion(d, NO_PRICE, "no price in the live price table"))
                continue
            up = unit_prices(price, prompt, now)
            cost = expected_cost(up, prompt, expected, prices.fx(up.currency))
        if max_cost is not None and cost > max_cost:
            excluded.append(Exclusion(d, MAX_COST, f"expected cost {cost} > max_cost {max_cost}"))
            continue
        lat = latency.get(key)
        # Unknown latency sorts after known latencies; provider/model make the order total and stable.
        ranked.append((cost, -d.quality, lat if lat is not None else inf, d.provider, d.model,
                       Candidate(d, cost, up, lat)))
    ranked.sort(key=_SORT_KEY)
    return Decision(tuple(r[5] for r in ranked), tuple(excluded))


def _SORT_KEY(r: tuple[Decimal, int, float, str, str, Candidate]) -> tuple[Decimal, int, float, str, str]:
    return r[:5]


def explain(decision: Decision) -> str:
    """The excluded deployments and their reasons, one clause each, for error messages."""
    return "; ".join(e.describe() for e in decision.excluded)
