"""Prices and pools prepared once per price version, for the router's hot path.

A PriceVersion is immutable, so everything about a deployment's price that does not depend on the request is
computed once per version (see the comment below). A pool (the list of deployments a route or model names) is
planned once per version as well: its deployments as plain per-position data, the few thresholds that decide
eligibility, and memos of what a decision needs that only depends on a handful of request facts. The router
(`gateway/decisions/routing.py`) uses these and falls back to `pricing.expected_cost()` wherever the integer form
cannot be exact.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import chain, compress, count, islice
from operator import eq
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

from gateway.decisions.pricing import (base_unit_prices, in_window_local, local_time, tier_unit_prices,
                                       window_unit_prices)
from gateway.domain import Deployment, DeploymentKey, OffPeakWindow, PriceVersion, UnitPrices

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


class Level:
    """One level of a price (base, a tier or a window): its UnitPrices and, when exact, the integer form."""

    __slots__ = ("up", "fx", "a", "b", "x", "unit", "k", "cache")

    def __init__(self, up: UnitPrices, fx: Decimal | None) -> None:
        self.up, self.fx = up, fx
        self.a: int | None = None  # None: use expected_cost()
        self.b = self.x = 0
        self.k = 1
        self.unit = Decimal(1)
        # With prompt-cache predictions (routing with a warm map): the same integer form over all four prices,
        # [a, b, c (cached_input), w (cache_write), x, unit, k], or None when not exact; k set by Prepared.
        self.cache: list[Any] | None = None
        if fx is None or up.per not in (1_000, 1_000_000):
            return
        parts = [up.input.as_tuple(), up.output.as_tuple(), fx.as_tuple()]
        if any(p.sign or not isinstance(p.exponent, int) for p in parts) or not fx:
            return
        (ci, ei), (co, eo), (cf, ef) = ((int("".join(map(str, p.digits))), int(p.exponent)) for p in parts)
        m = min(ei, eo)
        self.a, self.b = ci * 10 ** (ei - m) * cf, co * 10 ** (eo - m) * cf
        shift = 3 if up.per == 1_000 else 6
        self.x = m - shift + ef
        self.unit = Decimal((0, (1,), self.x))
        more = [up.cached_input.as_tuple(), up.cache_write.as_tuple()]
        if any(p.sign or not isinstance(p.exponent, int) for p in more):
            return
        (cc, ec), (cw, ew) = ((int("".join(map(str, p.digits))), int(p.exponent)) for p in more)
        m2 = min(ei, eo, ec, ew)
        x2 = m2 - shift + ef
        self.cache = [ci * 10 ** (ei - m2) * cf, co * 10 ** (eo - m2) * cf, cc * 10 ** (ec - m2) * cf,
                      cw * 10 ** (ew - m2) * cf, x2, Decimal((0, (1,), x2)), 1]


class Selected:
    """A price with tiers or off-peak windows: the levels, chosen per request."""

    __slots__ = ("windows", "tiers", "base")

    def __init__(self, windows: list[tuple[Any, Level]], tiers: list[tuple[int, Level]], base: Level) -> None:
        self.windows, self.tiers, self.base = windows, tiers, base


class Prepared:
    __slots__ = ("version", "flat", "other", "levels", "plans")

    def __init__(self, version: PriceVersion) -> None:
        self.version = version
        self.flat: dict[DeploymentKey, Level] = {}  # no tiers, no windows: one level for every request
        self.other: dict[DeploymentKey, Selected] = {}
        self.levels: list[Level] = []
        self.plans: dict[int, Plan] = {}  # by id(pool)
        for key, price in version.prices.items():
            if price is None:
                continue
            try:
                fx: Decimal | None = version.fx(price.currency)
            except Exception:
                fx = None  # expected_cost() is reached (and raises) only if the deployment is eligible

            def level(up: UnitPrices) -> Level:
                lv = Level(up, fx)
                self.levels.append(lv)
                return lv

            if not price.tiers and not price.off_peak:
                self.flat[key] = level(base_unit_prices(price))
                continue
            windows = [(w, level(window_unit_prices(price, w))) for w in price.off_peak]
            tiers = [(t.up_to, level(tier_unit_prices(price, t))) for t in price.tiers]
            # The level when no window is in force and there are no tiers (never used when there are tiers).
            base = level(base_unit_prices(price)) if not price.tiers else tiers[-1][1]
            self.other[key] = Selected(windows, tiers, base)
        exact = [lv for lv in self.levels if lv.a is not None]
        xmin = min((lv.x for lv in exact), default=0)
        for lv in exact:
            lv.k = 10 ** (lv.x - xmin)
        # The cache-aware integer forms share their own unit (cached and write prices may have more digits).
        cached = [lv.cache for lv in self.levels if lv.cache is not None]
        xmin2 = min((c[4] for c in cached), default=0)
        for c in cached:
            c[6] = 10 ** (c[4] - xmin2)

    def plan(self, pool: list[Deployment] | tuple[Deployment, ...]) -> Plan:
        """The plan of `pool`, made once while the same list (or tuple) holds the same deployments."""
        p = self.plans.get(id(pool))
        # A list compares its items by identity first: the same deployments cost a pointer comparison each. A list
        # of equal (immutable, so interchangeable) deployments gets the same decisions.
        if p is not None and p.pool == pool:
            return p
        if len(self.plans) >= 64:  # pools come from configuration; this bounds a caller that makes new ones
            self.plans.clear()
        p = self.plans[id(pool)] = Plan(self, pool)
        return p


_CACHE: dict[int, Prepared] = {}
_INF = float("inf")


def prepared(prices: PriceVersion) -> Prepared:
    p = _CACHE.get(id(prices))
    if p is not None and p.version is prices:
        return p
    p = Prepared(prices)
    if len(_CACHE) >= 16:  # a few versions live at once (the current one, one being explained); ids are reused
        _CACHE.clear()
    _CACHE[id(prices)] = p
    return p


def no_local(tz: str) -> Any:
    raise AssertionError("no off-peak window in this pool")


def local_times(now: datetime) -> Callable[[str], Any]:
    """The local time of `now` in a zone, computed once per zone (per decision)."""
    zones: dict[str, Any] = {}

    def local(tz: str) -> Any:
        t = zones.get(tz)
        if t is None:
            t = zones[tz] = local_time(now, tz)
        return t

    return local


def select_level(sel: Selected, prompt_tokens: int, local: Callable[[str], Any]) -> Level:
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


# ---- pools planned once per price version -------------------------------------------------------------------------
#
# Which deployments of a pool are eligible depends on a few request facts only, and most of those only through the
# thresholds of the pool: a prompt needing 5,000 tokens and one needing 6,000 exclude the same deployments when no
# context window lies between them. `Plan.eligibility_key` reduces the facts to that, so the eligible rows and the
# exclusion reasons are computed once per key (their texts, which quote the request's own numbers, are written
# only when someone reads them). For the eligible rows, the price level of each (the tier of the prompt, the window
# in force) depends on the prompt only through the pool's tier thresholds and on `now` only through which windows
# are in force: `Plan.level_key`. A decision is then one comprehension over integers, one sort and a few maps.


class Rows:
    """The eligible deployments of a pool under one eligibility key and level key, in the static order.

    The static order is (-quality, provider, model, position), so a stable sort on cost alone gives the ranking
    unless two rows of equal cost and quality have recent latencies. Rows are ranked by their distinct price
    levels when those are fewer (deployments sharing a price: one cost, one sort key, for all of them).
    """

    __slots__ = ("deps", "info", "ab", "keys", "positions", "levels", "neg_q", "amax", "bmax", "fast", "members",
                 "group_of", "same_q", "by_key", "cache_exact")

    def __init__(self, plan: Plan, positions: list[int], prompt_tokens: int, local: Callable[[str], Any]) -> None:
        pool, price_of = plan.pool, plan.price
        self.positions = positions
        self.levels: list[Level] = []
        for i in positions:
            pr = price_of[i]
            self.levels.append(pr if isinstance(pr, Level) else select_level(pr, prompt_tokens, local))  # type: ignore
        self.deps = deps = [pool[i] for i in positions]
        self.keys: list[DeploymentKey] = [(d.provider, d.model) for d in deps]
        self.by_key: dict[DeploymentKey, int] | None = None  # row of each key, made when a warm cache needs it
        self.cache_exact = all(lv.cache is not None for lv in self.levels)  # Level.cache usable for every row
        self.neg_q = [-d.quality for d in deps]
        self.fast = all(lv.a is not None for lv in self.levels)
        # Per row: what a Candidate needs to answer for itself (see routing.Candidate); per group of rows with the
        # same ordering integers (a * k, b * k): those integers, and the rows (ascending, so in the static order).
        self.info: list[tuple[Any, ...]] = []
        self.ab: list[tuple[int, int]] = []
        self.members: list[list[int]] | None = None  # None: a group per row
        self.group_of: list[int] = []
        self.same_q = False  # some group holds two rows of equal quality
        self.amax = self.bmax = 0
        if not self.fast:
            return
        levels: list[Any] = self.levels
        self.info = [(d, lv.up, lv.a, lv.b, lv.unit) for d, lv in zip(deps, levels)]
        self.amax = max((lv.a for lv in levels), default=0)
        self.bmax = max((lv.b for lv in levels), default=0)
        groups: dict[tuple[int, int], int] = {}
        self.group_of = [groups.setdefault((lv.a * lv.k, lv.b * lv.k), len(groups)) for lv in levels]
        self.ab = list(groups)
        if len(groups) * 5 > len(levels) * 4:  # hardly any shared price: grouping would cost more than it saves
            self.ab = [(lv.a * lv.k, lv.b * lv.k) for lv in levels]
            return
        members: list[list[int]] = [[] for _ in groups]
        for j, g in enumerate(self.group_of):
            members[g].append(j)
        self.members = members
        self.same_q = any(len({self.neg_q[j] for j in m}) < len(m) for m in members)

    def order(self, p: int, e: int, lats: list[Any] | None) -> list[int]:
        """The rows by (cost, -quality, latency (unknown last), provider, model, position), for p prompt and e
        output tokens; `lats` the recent latency of each row, or None when none is known."""
        ks = [p * a + e * b for a, b in self.ab]  # cost of each group in units of 10^Xmin
        n = len(ks)
        order = sorted(range(n), key=ks.__getitem__)  # stable: equal costs keep the static order
        members = self.members
        if members is not None:
            distinct = len(set(ks)) == n
            order = (list(chain.from_iterable(map(members.__getitem__, order))) if distinct
                     else _merge_equal(members, ks, order))
            if lats is None or (distinct and not self.same_q):
                return order
            ks = list(map(ks.__getitem__, self.group_of))  # per row
        elif lats is None or len(set(ks)) == n:
            return order
        # Rows of equal cost and quality are adjacent, in (provider, model, position) order: order each such run by
        # latency (unknown last) with a stable sort.
        kq = list(zip(map(ks.__getitem__, order), map(self.neg_q.__getitem__, order)))
        known = [_INF if lat is None else lat for lat in lats]
        start = prev = -2
        for i in chain(compress(count(), map(eq, kq, islice(kq, 1, None))), (-2,)):  # i: kq[i] == kq[i + 1]
            if i != prev + 1:
                if start >= 0:
                    order[start:prev + 2] = sorted(order[start:prev + 2], key=known.__getitem__)
                start = i
            prev = i
        return order


def _merge_equal(members: list[list[int]], ks: list[int], order: list[int]) -> list[int]:
    """Expand groups ranked by cost; rows of groups of equal cost merge in the static order."""
    out: list[int] = []
    i, n = 0, len(order)
    while i < n:
        k, j = ks[order[i]], i + 1
        while j < n and ks[order[j]] == k:
            j += 1
        if j == i + 1:
            out.extend(members[order[i]])
        else:
            out.extend(sorted(chain.from_iterable(members[g] for g in order[i:j])))
        i = j
    return out


class Eligible:
    """The eligibility of a pool's deployments under one eligibility key."""

    __slots__ = ("excluded", "positions", "rows")

    def __init__(self, excluded: list[tuple[int, str]], positions: list[int]) -> None:
        self.excluded = excluded  # (position, reason), in pool order
        self.positions = positions  # the eligible ones, in the static order
        self.rows: dict[Any, Rows] = {}  # by level key

    def rows_for(self, plan: Plan, lkey: Any, prompt_tokens: int, local: Callable[[str], Any]) -> Rows:
        r = self.rows.get(lkey)
        if r is None:
            if len(self.rows) >= 8:
                self.rows.clear()
            r = self.rows[lkey] = Rows(plan, self.positions, prompt_tokens, local)
        return r


class Plan:
    """A pool under one price version: per position, the deployment and its price; thresholds; memos."""

    __slots__ = ("pool", "price", "static_order", "context_windows", "max_outputs", "qualities", "tier_marks",
                 "windows", "eligible")

    def __init__(self, prep: Prepared, pool: list[Deployment] | tuple[Deployment, ...]) -> None:
        self.pool = pool[:]  # a copy of a list (the caller may change it), the tuple itself
        n = len(pool)
        keys = [(d.provider, d.model) for d in pool]
        self.price: list[Level | Selected | None] = [prep.flat.get(k) or prep.other.get(k) for k in keys]
        self.static_order = sorted(range(n), key=lambda i: (-pool[i].quality, keys[i], i))
        self.context_windows = sorted({d.context_window for d in pool})
        self.max_outputs = sorted({d.max_output_tokens for d in pool if d.max_output_tokens is not None})
        self.qualities = sorted({d.quality for d in pool})
        sel = [s for s in self.price if isinstance(s, Selected)]
        self.tier_marks = sorted({up_to for s in sel for up_to, _ in s.tiers})
        self.windows: list[OffPeakWindow] = list(dict.fromkeys(w for s in sel for w, _ in s.windows))
        self.eligible: dict[tuple[Any, ...], Eligible] = {}

    def eligibility_key(self, mode: str, allowed: frozenset[str] | None, needed: int, out: int | None,
                        min_context: int | None, min_quality: int | None, caps: frozenset[str],
                        cooling: frozenset[str]) -> tuple[Any, ...]:
        """The request facts eligibility depends on, thresholds reduced to their place among the pool's values."""
        cw = self.context_windows
        return (mode, allowed, bisect_left(cw, needed),  # context windows < needed are too small
                -1 if out is None else bisect_left(self.max_outputs, out),
                -1 if min_context is None else bisect_left(cw, min_context),
                -1 if min_quality is None else bisect_left(self.qualities, min_quality), caps, cooling)

    def level_key(self, prompt_tokens: int, local: Callable[[str], Any]) -> Any:
        """What the price levels in force depend on: the prompt's place among the tier thresholds and the windows
        in force (each window tested once per decision)."""
        if not self.windows and not self.tier_marks:
            return None
        return (bisect_left(self.tier_marks, prompt_tokens),
                tuple([in_window_local(w, local(w.tz)) for w in self.windows]))
