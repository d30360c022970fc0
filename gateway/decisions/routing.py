"""The router: which deployments may serve a request, cheapest first, and why the others may not.

A pure function over plain data: request facts, the candidate pool, the live price version, which providers are
cooling down and recent latencies. No I/O, no clock: `now` is an argument.
"""

from __future__ import annotations

import decimal
import gc
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from gateway.decisions.pricing import (expected_cost, local_time,
                                       unit_prices)
from gateway.decisions.price_index import Entry, prepared, select_level
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


def _reason(d: Deployment, facts: RequestFacts, cooling: frozenset[str]) -> str | None:
    """The first exclusion reason that applies to `d`, in the order of the constants above (prices aside)."""
    c = facts.constraints
    if d.mode != facts.mode:
        return MODE
    if c.providers is not None and d.provider not in c.providers:
        return PROVIDER_NOT_ALLOWED
    needed = facts.prompt_tokens + (facts.expected_output_tokens if facts.mode == "chat" else 0)
    if needed > d.context_window:
        return CONTEXT_LENGTH
    out = facts.requested_output_tokens
    if out is not None and d.max_output_tokens is not None and out > d.max_output_tokens:
        return MAX_OUTPUT
    if c.min_context is not None and d.context_window < c.min_context:
        return MIN_CONTEXT
    if c.min_quality is not None and d.quality < c.min_quality:
        return QUALITY
    if facts.capabilities - d.capabilities:
        return CAPABILITY
    if d.provider in cooling:
        return COOLING_DOWN
    return None


def _detail(d: Deployment, reason: str, facts: RequestFacts) -> str:
    """The human-readable detail of an exclusion for one of the reasons `_reason` finds."""
    c = facts.constraints
    if reason == MODE:
        return f"serves {d.mode}, not {facts.mode}"
    if reason == PROVIDER_NOT_ALLOWED:
        return f"provider {d.provider} not in allowed providers"
    if reason == CONTEXT_LENGTH:
        needed = facts.prompt_tokens + (facts.expected_output_tokens if facts.mode == "chat" else 0)
        return (f"needs {needed} tokens ({facts.prompt_tokens} prompt + {needed - facts.prompt_tokens} output), "
                f"context window is {d.context_window}")
    if reason == MAX_OUTPUT:
        return (f"requested {facts.requested_output_tokens} output tokens, "
                f"max_output_tokens is {d.max_output_tokens}")
    if reason == MIN_CONTEXT:
        return f"context window {d.context_window} < min_context {c.min_context}"
    if reason == QUALITY:
        return f"quality {d.quality} < min_quality {c.min_quality}"
    if reason == CAPABILITY:
        return f"lacks {', '.join(sorted(facts.capabilities - d.capabilities))}"
    if reason == COOLING_DOWN:
        return f"provider {d.provider} is cooling down after failures"
    raise ValueError(reason)


def _exclusion(d: Deployment, facts: RequestFacts, cooling: frozenset[str]) -> Exclusion | None:
    reason = _reason(d, facts, cooling)
    return None if reason is None else Exclusion(d, reason, _detail(d, reason, facts))


def _signatures(facts: RequestFacts) -> dict[str, Any]:
    """Per exclusion reason, the request facts its detail depends on (besides the deployment)."""
    c = facts.constraints
    return {
        MODE: facts.mode, PROVIDER_NOT_ALLOWED: None, COOLING_DOWN: None, QUALITY: c.min_quality,
        CAPABILITY: facts.capabilities, MIN_CONTEXT: c.min_context, MAX_OUTPUT: facts.requested_output_tokens,
        CONTEXT_LENGTH: (facts.prompt_tokens, facts.expected_output_tokens if facts.mode == "chat" else 0),
    }


def _excluded(e: Entry, reason: str, facts: RequestFacts) -> Exclusion:
    """The Exclusion of `e` for `reason`, reused while the facts its detail depends on are the same."""
    d = e.deployment
    memo_key = (reason, _signatures(facts)[reason])
    memo = e.exclusions
    ex = memo.get(memo_key)
    if ex is None:
        if len(memo) >= 16:
            memo.clear()
        ex = memo[memo_key] = Exclusion(d, reason, _detail(d, reason, facts))
    return ex


# Candidates are built without the frozen dataclass's __init__ (four object.__setattr__ calls): the same slots, set
# through their descriptors. The object is the same in every respect.
_new = object.__new__
def _slot_setter(cls: type, name: str) -> Callable[[object, Any], None]:
    setter: Callable[[object, Any], None] = getattr(cls, name).__set__
    return setter


_SET_C_DEPLOYMENT = _slot_setter(Candidate, "deployment")
_SET_C_COST = _slot_setter(Candidate, "expected_cost")
_SET_C_UP = _slot_setter(Candidate, "unit_prices")
_SET_C_LATENCY = _slot_setter(Candidate, "recent_latency_s")
_INF = float("inf")
_GC_PAUSE_FROM = 256
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable
_ZERO = Decimal(0)
_D = Decimal
_NO_PRICE_DETAIL = "no price in the live price table"


def rank(
    facts: RequestFacts,
    pool: Iterable[Deployment],
    prices: PriceVersion,
    now: datetime,
    cooling: frozenset[str] = frozenset(),
    latency: Mapping[DeploymentKey, float] | None = None,
) -> Decision:
    """Rank `pool` for `facts`: lowest expected cost, then higher quality, then lower recent latency."""
    # A large pool makes thousands of objects that outlive the loop (candidates, exclusions, sort rows) and none that
    # form cycles: collections triggered meanwhile would only scan and promote the decision under construction
    # (at 10,000 deployments they doubled its cost). Pause the cyclic collector for the call, as timeit does.
    if _gc_isenabled() and isinstance(pool, (list, tuple)) and len(pool) >= _GC_PAUSE_FROM:
        _gc_disable()
        try:
            return _rank(facts, pool, prices, now, cooling, latency)
        finally:
            _gc_enable()
    return _rank(facts, pool, prices, now, cooling, latency)


def _rank(
    facts: RequestFacts,
    pool: Iterable[Deployment],
    prices: PriceVersion,
    now: datetime,
    cooling: frozenset[str],
    latency: Mapping[DeploymentKey, float] | None,
) -> Decision:
    prep = prepared(prices)
    entries = prep.entries
    c = facts.constraints
    max_cost = c.max_cost
    mode, allowed, min_context, min_quality = facts.mode, c.providers, c.min_context, c.min_quality
    caps = facts.capabilities
    prompt, expected = facts.prompt_tokens, facts.expected_output_tokens
    needed = prompt + (expected if mode == "chat" else 0)
    out = facts.requested_output_tokens
    limit = 10 ** decimal.getcontext().prec
    sigs = _signatures(facts)
    get_latency = latency.get if latency else None
    zones: dict[str, Any] = {}

    def local(tz: str) -> Any:  # the local time of `now`, once per zone per decision
        t = zones.get(tz)
        if t is None:
            t = zones[tz] = local_time(now, tz)
        return t

    # rows sort as (cost, -quality, latency, provider, model, position): position makes the order total without ever
    # comparing candidates, and keeps the input order of full ties (as a stable sort would).
    rows: list[tuple[Any, ...]] = []
    excluded: list[Exclusion] = []
    decimal_keys = False
    n = 0
    entry_of, add_row, add_excluded, new, ident = entries.get, rows.append, excluded.append, _new, id
    set_deployment, set_cost, set_up, set_latency = _SET_C_DEPLOYMENT, _SET_C_COST, _SET_C_UP, _SET_C_LATENCY
    for d in pool:
        e = entry_of(ident(d))
        if e is None or e.deployment is not d:
            e = prep.entry(d)
        # The rules of _reason(), inline (the order is the order of the reasons).
        if d.mode != mode:
            reason: str | None = MODE
        elif allowed is not None and d.provider not in allowed:
            reason = PROVIDER_NOT_ALLOWED
        elif needed > d.context_window:
            reason = CONTEXT_LENGTH
        elif out is not None and d.max_output_tokens is not None and out > d.max_output_tokens:
            reason = MAX_OUTPUT
        elif min_context is not None and d.context_window < min_context:
            reason = MIN_CONTEXT
        elif min_quality is not None and d.quality < min_quality:
            reason = QUALITY
        elif caps and not caps <= d.capabilities:
            reason = CAPABILITY
        elif cooling and d.provider in cooling:
            reason = COOLING_DOWN
        else:
            reason = None
        if reason is not None:
            ex = e.exclusions.get((reason, sigs[reason])) if e.exclusions else None
            add_excluded(ex if ex is not None else _excluded(e, reason, facts))
            continue
        lv = e.flat
        if lv is None:
            if e.selected is not None:
                lv = select_level(e.selected, prompt, local)
            elif prices.prices.get(e.key) is None:
                ex = e.exclusions.get((NO_PRICE, None))
                if ex is None:
                    ex = e.exclusions[(NO_PRICE, None)] = Exclusion(d, NO_PRICE, _NO_PRICE_DETAIL)
                excluded.append(ex)
                continue
        if lv is not None and lv.a is not None:
            v = prompt * lv.a + expected * lv.b
            if v < limit:
                cost = _D(v) * lv.unit if v else _ZERO
                k: Any = v * lv.k
            else:
                cost = k = expected_cost(lv.up, prompt, expected, lv.fx)  # type: ignore[arg-type]
                decimal_keys = True
            up = lv.up
        else:  # a price the integers cannot represent: the reference computation
            up = unit_prices(prices.prices[e.key], prompt, now)
            cost = k = expected_cost(up, prompt, expected, prices.fx(up.currency))
            decimal_keys = True
        if max_cost is not None and cost > max_cost:
            excluded.append(Exclusion(d, MAX_COST, f"expected cost {cost} > max_cost {max_cost}"))
            continue
        lat = get_latency(e.key) if get_latency is not None else None
        cand = new(Candidate)
        set_deployment(cand, d)
        set_cost(cand, cost)
        set_up(cand, up)
        set_latency(cand, lat)
        # Unknown latency sorts after known latencies; provider/model make the order total and stable.
        add_row((k, -d.quality, lat if lat is not None else _INF, d.provider, d.model, n, cand))
        n += 1
    if decimal_keys:  # some cost is only known as a Decimal: order every row by its Decimal cost
        rows = [(r[6].expected_cost,) + r[1:] for r in rows]
    rows.sort()
    return Decision(tuple([r[6] for r in rows]), tuple(excluded))


def explain(decision: Decision) -> str:
    """The excluded deployments and their reasons, one clause each, for error messages."""
    return "; ".join(e.describe() for e in decision.excluded)
