"""Presenting a routing decision: as JSON (POST /admin/route/explain) and as a table (`gateway route`)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from gateway.decisions.pricing import expected_cost, unit_prices
from gateway.decisions.routing import Decision, Exclusion
from gateway.domain import PriceVersion, RequestFacts
from gateway.money import money_str


def excluded_cost(e: Exclusion, facts: RequestFacts, prices: PriceVersion, now: datetime) -> Decimal | None:
    """What an excluded deployment would have cost (the contract asks for every candidate's estimate); None when
    it has no price, or no FX rate for its currency, in this version."""
    price = prices.prices.get(e.deployment.key)
    if price is None:
        return None
    up = unit_prices(price, facts.prompt_tokens, now)
    try:
        fx = prices.fx(up.currency)
    except KeyError:
        return None
    output = facts.expected_output_tokens if facts.mode == "chat" else 0
    return expected_cost(up, facts.prompt_tokens, output, fx)


def _cost_text(cost: Decimal | None) -> str | None:
    return None if cost is None else money_str(cost)


def decision_json(facts: RequestFacts, decision: Decision, prices: PriceVersion,
                  now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    return {
        "model": facts.model,
        "prompt_tokens_estimate": facts.prompt_tokens,
        "expected_output_tokens": facts.expected_output_tokens,
        "price_version": prices.version,
        "currency": prices.reporting_currency,
        "candidates": [
            {
                "rank": i, "provider": c.deployment.provider, "model": c.deployment.model,
                "expected_cost": money_str(c.expected_cost), "quality": c.deployment.quality,
                "expected_cached_tokens": c.expected_cached_tokens,
                "expected_cache_write_tokens": c.expected_cache_write_tokens,
                "cold_cost": money_str(c.cold_cost),
                "context_window": c.deployment.context_window,
                "input_price": money_str(c.unit_prices.input), "output_price": money_str(c.unit_prices.output),
                "price_currency": c.unit_prices.currency, "per": "1K" if c.unit_prices.per == 1000 else "1M",
                "window": c.unit_prices.window, "tier": c.unit_prices.tier,
            }
            for i, c in enumerate(decision.candidates, 1)
        ],
        "excluded": [
            {"provider": e.deployment.provider, "model": e.deployment.model, "reason": e.reason, "detail": e.detail,
             "expected_cost": _cost_text(excluded_cost(e, facts, prices, now))}
            for e in decision.excluded
        ],
    }


def decision_table(facts: RequestFacts, decision: Decision, prices: PriceVersion,
                   now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    lines = [
        f"request: model={facts.model} prompt_tokens~{facts.prompt_tokens} "
        f"expected_output={facts.expected_output_tokens} price_version={prices.version}",
        f"{'rank':<5}{'provider/model':<34}{'expected cost':>16} {'cold cost':>16} {'cached':>8} {'cur':<4}"
        f"{'quality':>8}  prices",
    ]
    for i, c in enumerate(decision.candidates, 1):
        up = c.unit_prices
        note = f"{money_str(up.input)}/{money_str(up.output)} {up.currency} per {'1K' if up.per == 1000 else '1M'}"
        if up.window:
            note += f" ({up.window})"
        if up.tier:
            note += f" (tier up_to {up.tier})"
        if c.expected_cache_write_tokens:
            note += f" (writes {c.expected_cache_write_tokens} to cache)"
        lines.append(f"{i:<5}{c.deployment.provider + '/' + c.deployment.model:<34}"
                     f"{money_str(c.expected_cost):>16} {money_str(c.cold_cost):>16} {c.expected_cached_tokens:>8} "
                     f"{prices.reporting_currency:<4}{c.deployment.quality:>8}  {note}")
    if not decision.candidates:
        lines.append("(no eligible deployment)")
    if decision.excluded:
        lines.append("excluded:")
        for e in decision.excluded:
            cost = _cost_text(excluded_cost(e, facts, prices, now))
            estimate = f" (expected cost {cost} {prices.reporting_currency})" if cost is not None else " (no price)"
            lines.append(f"  {e.deployment.provider}/{e.deployment.model}: {e.reason}: {e.detail}{estimate}")
    return "\n".join(lines)
