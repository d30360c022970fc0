"""The router: which deployments may serve a request, cheapest first, and why the others may not.

A pure function over plain data: request facts, the candidate pool, the live price version, which providers are
cooling down and recent latencies. No I/O, no clock: `now` is an argument.

How it stays cheap (a few hundred ns per eligible deployment, next to nothing per excluded one): the pool is
planned once per price version (`price_index.Plan`); the eligible rows and the exclusion reasons are looked up by
the few facts they depend on; the ranking is a stable sort of integer costs over rows already in (-quality,
provider, model) order, by price group when deployments share prices; candidates compute their Decimal cost when
first read, and exclusions are written when first read, since the pipeline reads neither on the way upstream.
"""

from __future__ import annotations

import decimal
import gc
from bisect import bisect_left
from datetime import datetime
from decimal import Decimal
from itertools import filterfalse, repeat
from operator import itemgetter
from typing import Any, Iterable, Mapping

from gateway.decisions.price_index import Eligible, Plan, Rows, local_times, no_local, prepared
from gateway.decisions.pricing import expected_cost, unit_prices
from gateway.domain import Deployment, DeploymentKey, PriceVersion, RequestFacts

from gateway.decisions.candidates import (  # noqa: F401  (the reasons are part of this module's interface)
    CAPABILITY, CONTEXT_LENGTH, COOLING_DOWN, MAX_COST, MAX_OUTPUT, MIN_CONTEXT, MODE, NO_PRICE, PROVIDER_NOT_ALLOWED,
    QUALITY, Candidate, Decision, Exclusion, _SET_CANDIDATES, _SET_COST, _SET_EXCLUDED, _SET_F, _SET_WHY, _list_cost,
)

_new = object.__new__
_D = Decimal
_ZERO = Decimal(0)
_INF = float("inf")
_NO_PRICE_DETAIL = "no price in the live price table"




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


def _exclusions(plan: Plan, facts: RequestFacts, excluded: list[tuple[Any, ...]], over: list[tuple[Any, ...]],
                max_cost: Decimal | None) -> tuple[Exclusion, ...]:
    """The Exclusions of a decision, in pool order: the reasons found by eligibility, then those over max_cost."""
    items = sorted(excluded + over, key=itemgetter(0)) if over else excluded
    out = []
    for item in items:
        d, reason = plan.pool[item[0]], item[1]
        if reason == NO_PRICE:
            detail = _NO_PRICE_DETAIL
        elif reason == MAX_COST:
            detail = f"expected cost {item[2]} > max_cost {max_cost}"
        else:
            detail = _detail(d, reason, facts)
        out.append(Exclusion(d, reason, detail))
    return tuple(out)


def _eligibility(plan: Plan, facts: RequestFacts, cooling: frozenset[str], key: tuple[Any, ...]) -> Eligible:
    """Each deployment's first exclusion reason (or none) for the facts `key` stands for; kept under `key`."""
    excluded: list[tuple[int, str]] = []
    ok = [False] * len(plan.pool)
    for i, d in enumerate(plan.pool):
        reason = _reason(d, facts, cooling)
        if reason is None and plan.price[i] is None:
            reason = NO_PRICE
        if reason is None:
            ok[i] = True
        else:
            excluded.append((i, reason))
    el = Eligible(excluded, [i for i in plan.static_order if ok[i]])
    if len(plan.eligible) >= 64:
        plan.eligible.clear()
    plan.eligible[key] = el
    return el


_GC_PAUSE_FROM = 256
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable
_LIMITS: dict[int, int] = {}


def rank(
    facts: RequestFacts,
    pool: Iterable[Deployment],
    prices: PriceVersion,
    now: datetime,
    cooling: frozenset[str] = frozenset(),
    latency: Mapping[DeploymentKey, float] | None = None,
    warm: Mapping[DeploymentKey, tuple[int, int]] | None = None,
) -> Decision:
    """Rank `pool` for `facts`: lowest expected cost, then a warm prompt cache, then higher quality, then lower
    recent latency.

    `warm`: per deployment, the (cached, cache-write) prompt tokens the prefix-cache model expects
    (`gateway.decisions.prefix_cache.expected_cache`); those deployments' expected cost prices them at cached_input
    and cache_write, the rest of the prompt at input. Absent or empty: list prices (the planned fast path).
    """
    if type(pool) is not list and type(pool) is not tuple:
        pool = list(pool)
    # A large pool makes thousands of objects that outlive the call (candidates) and none that form cycles:
    # collections triggered meanwhile would only scan and promote the decision under construction. Pause the cyclic
    # collector for the call, as timeit does.
    if len(pool) >= _GC_PAUSE_FROM and _gc_isenabled():
        _gc_disable()
        try:
            return _rank(facts, pool, prices, now, cooling, latency, warm)
        finally:
            _gc_enable()
    return _rank(facts, pool, prices, now, cooling, latency, warm)


def _rank(facts: RequestFacts, pool: list[Deployment] | tuple[Deployment, ...], prices: PriceVersion, now: datetime,
          cooling: frozenset[str], latency: Mapping[DeploymentKey, float] | None,
          warm: Mapping[DeploymentKey, tuple[int, int]] | None = None) -> Decision:
    plan = prepared(prices).plan(pool)
    c = facts.constraints
    mode, prompt, expected = facts.mode, facts.prompt_tokens, facts.expected_output_tokens
    key = plan.eligibility_key(mode, c.providers, prompt + (expected if mode == "chat" else 0),
                               facts.requested_output_tokens, c.min_context, c.min_quality, facts.capabilities,
                               cooling)
    try:
        el = plan.eligible.get(key)
    except TypeError:  # a set (not a frozenset) of providers, capabilities or cooling ones: the same facts
        key = tuple(frozenset(x) if isinstance(x, (set, list)) else x for x in key)
        el = plan.eligible.get(key)
    if el is None:
        el = _eligibility(plan, facts, cooling, key)
    local = local_times(now) if plan.windows else no_local
    rows = el.rows_for(plan, plan.level_key(prompt, local), prompt, local)
    prec = decimal.getcontext().prec
    limit = _LIMITS.get(prec) or _LIMITS.setdefault(prec, 10 ** prec)
    if rows.fast and prompt >= 0 and expected >= 0 and prompt * rows.amax + expected * rows.bmax < limit:
        ranked = (_fast_warm(rows, prompt, expected, c.max_cost, latency, warm, limit) if warm
                  else _fast(rows, prompt, expected, c.max_cost, latency))
        if ranked is None:
            ranked = _general(rows, prompt, expected, prices, now, limit, c.max_cost, latency, warm)
        candidates, over = ranked
    else:
        candidates, over = _general(rows, prompt, expected, prices, now, limit, c.max_cost, latency, warm)
    decision = _new(Decision)
    _SET_CANDIDATES(decision, candidates)
    why = (_exclusions, plan, facts, el.excluded, over, c.max_cost) if el.excluded or over else None
    _SET_EXCLUDED(decision, None if why else ())  # None: written from `why` when first read
    _SET_WHY(decision, why)
    return decision


def _fast(rows: Rows, p: int, e: int, max_cost: Decimal | None,
          latency: Mapping[DeploymentKey, float] | None) -> tuple[tuple[Candidate, ...], list[tuple[Any, ...]]]:
    """Every cost exact in integers: rank on them; candidates carry their row and compute their Decimal cost."""
    lats = list(map(latency.get, rows.keys)) if latency else None
    order = rows.order(p, e, lats)
    m = len(order)
    info, pe = rows.info, (p, e)
    if max_cost is None:
        cands = list(map(_new, repeat(Candidate, m)))
        lat_of = repeat(None) if lats is None else map(lats.__getitem__, order)
        any(map(_SET_F, cands, zip(map(info.__getitem__, order), lat_of, repeat(pe))))  # (setters return None)
        return tuple(cands), []
    out, over, positions = [], [], rows.positions
    for j in order:
        r = info[j]
        v = p * r[2] + e * r[3]
        cost = _D(v) * r[4] if v else _ZERO  # exact: v < 10^prec
        if cost > max_cost:
            over.append((positions[j], MAX_COST, cost))
            continue
        cand = _new(Candidate)
        _SET_F(cand, (r, None if lats is None else lats[j], pe))
        _SET_COST(cand, cost)
        out.append(cand)
    return tuple(out), over


def _fast_warm(rows: Rows, p: int, e: int, max_cost: Decimal | None, latency: Mapping[DeploymentKey, float] | None,
               warm: Mapping[DeploymentKey, tuple[int, int]], limit: int,
               ) -> tuple[tuple[Candidate, ...], list[tuple[Any, ...]]] | None:
    """The fast path when some deployments expect prompt-cache hits (or explicit writes): rank the others at list
    prices as `_fast` does, then place each warm row before the first cold row that does not cost less (a warm
    prefix wins a tie), warm rows among themselves by (cost, -quality, latency, static order). Costs compare as
    exact integers over all four prices (`Level.cache`); only the O(log n) cold rows the warm ones are placed
    among are priced that way. None: some price has no exact integer form (the caller takes `_general`)."""
    by_key = rows.by_key
    if by_key is None:
        by_key = rows.by_key = {k: j for j, k in enumerate(rows.keys)}
    hot = [(by_key[k], v) for k, v in warm.items() if k in by_key]
    if not hot:
        return _fast(rows, p, e, max_cost, latency)
    if not rows.cache_exact:
        return None
    levels = rows.levels
    lats = list(map(latency.get, rows.keys)) if latency else None
    order = rows.order(p, e, lats)
    info, pe, neg_q = rows.info, (p, e), rows.neg_q
    if len(hot) == 1:
        cold = order[:]
        cold.remove(hot[0][0])
    else:
        hot_rows = {j for j, _ in hot}
        cold = list(filterfalse(hot_rows.__contains__, order))

    def cold_key(j: int) -> int:
        a, b, _, _, _, _, k = levels[j].cache  # type: ignore[misc]
        return (p * a + e * b) * k  # type: ignore[no-any-return]

    placed = []
    for j, (cached, write) in hot:
        a, b, c, w, _, unit, k = levels[j].cache  # type: ignore[misc]
        fresh = max(p - cached - write, 0)
        v = fresh * a + cached * c + write * w + e * b
        if v >= limit:
            return None
        lat = lats[j] if lats is not None else None
        placed.append((v * k, neg_q[j], _INF if lat is None else lat, j, cached, write, v, unit))
    placed.sort()
    # The merged order: each warm row before the first cold row that does not cost less.
    merged: list[int] = []
    lo = 0
    for key, _, _, j, _, _, _, _ in placed:
        at = bisect_left(cold, key, lo, key=cold_key)
        merged += cold[lo:at]
        merged.append(j)
        lo = at
    merged += cold[lo:]
    hot_at = {j: (cached, write, v, unit) for _, _, _, j, cached, write, v, unit in placed}
    if max_cost is None:  # as _fast: cold costs computed when read; then the warm rows get their own
        cands = list(map(_new, repeat(Candidate, len(merged))))
        lat_of = repeat(None) if lats is None else map(lats.__getitem__, merged)
        any(map(_SET_F, cands, zip(map(info.__getitem__, merged), lat_of, repeat(pe))))
        for j, (cached, write, v, unit) in hot_at.items():
            cand = cands[merged.index(j)]
            _SET_F(cand, (info[j], lats[j] if lats is not None else None, pe, (cached, write), None))
            _SET_COST(cand, _D(v) * unit if v else _ZERO)  # exact: v < 10^prec
        return tuple(cands), []
    out: list[Candidate] = []
    over: list[tuple[Any, ...]] = []
    positions = rows.positions
    for j in merged:
        h = hot_at.get(j)
        if h is None:
            _add_cold(out, over, info[j], lats[j] if lats is not None else None, pe, max_cost, positions[j])
            continue
        cached, write, v, unit = h
        cost = _D(v) * unit if v else _ZERO
        if cost > max_cost:
            over.append((positions[j], MAX_COST, cost))
            continue
        cand = _new(Candidate)
        _SET_F(cand, (info[j], lats[j] if lats is not None else None, pe, (cached, write), None))
        _SET_COST(cand, cost)
        out.append(cand)
    return tuple(out), over


def _add_cold(cands: list[Candidate], over: list[tuple[Any, ...]], row: tuple[Any, ...], lat: float | None,
              pe: tuple[int, int], max_cost: Decimal | None, position: int) -> None:
    cand = _new(Candidate)
    _SET_F(cand, (row, lat, pe))
    if max_cost is not None:
        cost = _list_cost((row, lat, pe))
        if cost > max_cost:
            over.append((position, MAX_COST, cost))
            return
        _SET_COST(cand, cost)
    cands.append(cand)


def _general(rows: Rows, p: int, e: int, prices: PriceVersion, now: datetime, limit: int,
             max_cost: Decimal | None, latency: Mapping[DeploymentKey, float] | None,
             warm: Mapping[DeploymentKey, tuple[int, int]] | None = None,
             ) -> tuple[tuple[Candidate, ...], list[tuple[Any, ...]]]:
    """Some cost is not exact in integers: the Decimal computation where needed, rows in pool order (so an error,
    such as a missing FX rate, is the one the first such deployment raises)."""
    get_latency = latency.get if latency else None
    out: list[tuple[Any, ...]] = []
    over: list[tuple[Any, ...]] = []
    decimal_keys = bool(warm)
    positions = rows.positions
    for j in sorted(range(len(positions)), key=positions.__getitem__):
        d, lv = rows.deps[j], rows.levels[j]
        k: Any
        if lv is not None and lv.a is not None:
            v = p * lv.a + e * lv.b
            if v < limit:
                cost = _D(v) * lv.unit if v else _ZERO
                k = v * lv.k
            else:
                cost = k = expected_cost(lv.up, p, e, lv.fx)  # type: ignore[arg-type]
                decimal_keys = True
            up = lv.up
        else:  # a price the integers cannot represent: the reference computation
            up = unit_prices(prices.prices[rows.keys[j]], p, now)
            cost = k = expected_cost(up, p, e, prices.fx(up.currency))
            decimal_keys = True
        hit = warm.get(rows.keys[j]) if warm else None
        cold_flag = 1
        if hit is not None:  # expected prompt-cache hits (or explicit writes): the reference computation
            cold, cold_flag = cost, 0
            cost = k = expected_cost(up, p, e, prices.fx(up.currency), cached_tokens=hit[0],
                                     cache_write_tokens=hit[1])
        if max_cost is not None and cost > max_cost:
            over.append((positions[j], MAX_COST, cost))
            continue
        lat = get_latency(rows.keys[j]) if get_latency is not None else None
        cand = Candidate(d, cost, up, lat) if hit is None else Candidate(d, cost, up, lat, hit[0], hit[1], cold)
        out.append((k, cold_flag, -d.quality, _INF if lat is None else lat, d.provider, d.model, positions[j], cand))
    if decimal_keys:  # some cost is only known as a Decimal: order every row by its Decimal cost
        out = [(r[7].expected_cost,) + r[1:] for r in out]
    out.sort()
    return tuple([r[7] for r in out]), over


def explain(decision: Decision) -> str:
    """The excluded deployments and their reasons, one clause each, for error messages."""
    return "; ".join(e.describe() for e in decision.excluded)
