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

from gateway.decisions.pricing import (base_unit_prices, choose_tier, expected_cost, in_window_local, local_time,
                                       tier_unit_prices, unit_prices, window_unit_prices)
from gateway.domain import Deployment, DeploymentKey, Price, PriceVersion, RequestFacts, UnitPrices

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


# ---- prices prepared once per price version ----------------------------------------------------------------------
#
# A PriceVersion is immutable, so everything about a deployment's price that does not depend on the request is
# computed once per version: each level's UnitPrices (base, every tier, every off-peak window) and, where the cost
# can be computed in integers, the integers that give the exact Decimal `expected_cost()` would return.
#
# expected_cost() computes ((P * input + E * output) shifted by -3 or -6) * fx. With every intermediate exact (no
# more digits than the context's precision), that Decimal has the coefficient P * A + E * B and the exponent X,
# where A = ci * 10^(ei - m) * cf, B = co * 10^(eo - m) * cf, m = min(ei, eo), X = m - 3|6 + ef (c, e: coefficient
# and exponent of input, output, fx). So `Decimal(P * A + E * B) * 1EX` is that same Decimal, digit for digit,
# whenever P * A + E * B < 10^prec (then every intermediate is smaller still). Otherwise, and for any price the
# integers cannot represent (`per` other than 10^3/10^6, negative or non-finite figures, a missing or non-positive
# FX rate), the router calls expected_cost() itself. For ordering, (P * A + E * B) * K with K = 10^(X - Xmin) (Xmin
# the smallest X of the version) is the cost in units of 10^Xmin: exact integers, comparable across deployments.


class _Level:
    """One level of a price (base, a tier or a window): its UnitPrices and, when exact, the integer form."""

    __slots__ = ("up", "fx", "a", "b", "x", "unit", "k")

    def __init__(self, up: UnitPrices, fx: Decimal | None) -> None:
        self.up, self.fx = up, fx
        self.a: int | None = None  # None: use expected_cost()
        self.b = self.x = 0
        self.k = 1
        self.unit = Decimal(1)
        if fx is None or up.per not in (1_000, 1_000_000):
            return
        parts = [up.input.as_tuple(), up.output.as_tuple(), fx.as_tuple()]
        if any(p.sign or not isinstance(p.exponent, int) for p in parts) or not fx:
            return
        (ci, ei), (co, eo), (cf, ef) = ((int("".join(map(str, p.digits))), int(p.exponent)) for p in parts)
        m = min(ei, eo)
        self.a, self.b = ci * 10 ** (ei - m) * cf, co * 10 ** (eo - m) * cf
        self.x = m - (3 if up.per == 1_000 else 6) + ef
        self.unit = Decimal((0, (1,), self.x))


class _Selected:
    """A price with tiers or off-peak windows: the levels, chosen per request."""

    __slots__ = ("windows", "tiers", "base")

    def __init__(self, windows: list[tuple[Any, _Level]], tiers: list[tuple[int, _Level]], base: _Level) -> None:
        self.windows, self.tiers, self.base = windows, tiers, base


class _Entry:
    """A deployment as the router sees it under one price version (found by id(deployment))."""

    __slots__ = ("deployment", "key", "flat", "selected", "exclusions")

    def __init__(self, d: Deployment, flat: _Level | None, selected: _Selected | None) -> None:
        self.deployment = d
        self.key: DeploymentKey = (d.provider, d.model)
        self.flat, self.selected = flat, selected
        # Exclusions depend on the deployment and a few request facts only (route constraints, mode, capabilities):
        # the same immutable Exclusion is handed out again for the same facts.
        self.exclusions: dict[tuple[Any, ...], Exclusion] = {}


class _Prepared:
    __slots__ = ("version", "flat", "other", "levels", "entries")

    def __init__(self, version: PriceVersion) -> None:
        self.version = version
        self.flat: dict[DeploymentKey, _Level] = {}  # no tiers, no windows: one level for every request
        self.other: dict[DeploymentKey, _Selected] = {}
        self.levels: list[_Level] = []
        self.entries: dict[int, _Entry] = {}
        for key, price in version.prices.items():
            if price is None:
                continue
            try:
                fx: Decimal | None = version.fx(price.currency)
            except Exception:
                fx = None  # expected_cost() is reached (and raises) only if the deployment is eligible

            def level(up: UnitPrices) -> _Level:
                lv = _Level(up, fx)
                self.levels.append(lv)
                return lv

            if not price.tiers and not price.off_peak:
                self.flat[key] = level(base_unit_prices(price))
                continue
            windows = [(w, level(window_unit_prices(price, w))) for w in price.off_peak]
            tiers = [(t.up_to, level(tier_unit_prices(price, t))) for t in price.tiers]
            # The level when no window is in force and there are no tiers (never used when there are tiers).
            base = level(base_unit_prices(price)) if not price.tiers else tiers[-1][1]
            self.other[key] = _Selected(windows, tiers, base)
        exact = [lv for lv in self.levels if lv.a is not None]
        xmin = min((lv.x for lv in exact), default=0)
        for lv in exact:
            lv.k = 10 ** (lv.x - xmin)

    def entry(self, d: Deployment) -> _Entry:
        if len(self.entries) >= 100_000:  # pools come from configuration; this bounds a caller that makes new ones
            self.entries.clear()
        key = (d.provider, d.model)
        e = self.entries[id(d)] = _Entry(d, self.flat.get(key), self.other.get(key))
        return e  # it holds `d`, so id(d) cannot be reused while the entry lives


_PREPARED: dict[int, _Prepared] = {}


def _prepared(prices: PriceVersion) -> _Prepared:
    p = _PREPARED.get(id(prices))
    if p is not None and p.version is prices:
        return p
    p = _Prepared(prices)
    if len(_PREPARED) >= 16:  # a few versions live at once (the current one, one being explained); ids are reused
        _PREPARED.clear()
    _PREPARED[id(prices)] = p
    return p


def _select(sel: _Selected, prompt_tokens: int, local: Callable[[str], Any]) -> _Level:
    """unit_prices(), over prepared levels: a window in force, else the tier of the prompt, else the base."""
    for w, lv in sel.windows:
        if in_window_local(w, local(w.tz)):
            return lv
    if sel.tiers:
        for up_to, lv in sel.tiers:
            if prompt_tokens <= up_to:
                return lv
        return sel.tiers[-1][1]
    return sel.base


def _signatures(facts: RequestFacts) -> dict[str, Any]:
    """Per exclusion reason, the request facts its detail depends on (besides the deployment)."""
    c = facts.constraints
    return {
        MODE: facts.mode, PROVIDER_NOT_ALLOWED: None, COOLING_DOWN: None, QUALITY: c.min_quality,
        CAPABILITY: facts.capabilities, MIN_CONTEXT: c.min_context, MAX_OUTPUT: facts.requested_output_tokens,
        CONTEXT_LENGTH: (facts.prompt_tokens, facts.expected_output_tokens if facts.mode == "chat" else 0),
    }


def _excluded(e: _Entry, reason: str, facts: RequestFacts) -> Exclusion:
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
    prep = _prepared(prices)
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
                lv = _select(e.selected, prompt, local)
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
