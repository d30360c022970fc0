"""Prices prepared once per price version, for the router's hot loop.

A PriceVersion is immutable, so everything about a deployment's price that does not depend on the request is
computed once per version (see the comment below). The router (`gateway/decisions/routing.py`) uses these levels
and falls back to `pricing.expected_cost()` wherever the integer form cannot be exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from gateway.decisions.pricing import base_unit_prices, in_window_local, tier_unit_prices, window_unit_prices
from gateway.domain import Deployment, DeploymentKey, PriceVersion, UnitPrices

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


class Selected:
    """A price with tiers or off-peak windows: the levels, chosen per request."""

    __slots__ = ("windows", "tiers", "base")

    def __init__(self, windows: list[tuple[Any, Level]], tiers: list[tuple[int, Level]], base: Level) -> None:
        self.windows, self.tiers, self.base = windows, tiers, base


class Entry:
    """A deployment as the router sees it under one price version (found by id(deployment))."""

    __slots__ = ("deployment", "key", "flat", "selected", "exclusions")

    def __init__(self, d: Deployment, flat: Level | None, selected: Selected | None) -> None:
        self.deployment = d
        self.key: DeploymentKey = (d.provider, d.model)
        self.flat, self.selected = flat, selected
        # Exclusions depend on the deployment and a few request facts only (route constraints, mode, capabilities):
        # the same immutable Exclusion is handed out again for the same facts.
        self.exclusions: dict[tuple[Any, ...], Any] = {}  # routing.Exclusion, reused per facts


class Prepared:
    __slots__ = ("version", "flat", "other", "levels", "entries")

    def __init__(self, version: PriceVersion) -> None:
        self.version = version
        self.flat: dict[DeploymentKey, Level] = {}  # no tiers, no windows: one level for every request
        self.other: dict[DeploymentKey, Selected] = {}
        self.levels: list[Level] = []
        self.entries: dict[int, Entry] = {}
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

    def entry(self, d: Deployment) -> Entry:
        if len(self.entries) >= 100_000:  # pools come from configuration; this bounds a caller that makes new ones
            self.entries.clear()
        key = (d.provider, d.model)
        e = self.entries[id(d)] = Entry(d, self.flat.get(key), self.other.get(key))
        return e  # it holds `d`, so id(d) cannot be reused while the entry lives


_CACHE: dict[int, Prepared] = {}


def prepared(prices: PriceVersion) -> Prepared:
    p = _CACHE.get(id(prices))
    if p is not None and p.version is prices:
        return p
    p = Prepared(prices)
    if len(_CACHE) >= 16:  # a few versions live at once (the current one, one being explained); ids are reused
        _CACHE.clear()
    _CACHE[id(prices)] = p
    return p


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
