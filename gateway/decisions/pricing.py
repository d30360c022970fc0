"""Pricing as pure functions: which unit prices apply to a request, and what its tokens cost.

All arithmetic is `Decimal`; dividing by `per` (10^3 or 10^6) is a shift of the exponent, so it is exact.
"""

from __future__ import annotations

from datetime import datetime, time, timezone
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from gateway.domain import ZERO, Cost, OffPeakWindow, Price, PriceVersion, Tier, UnitPrices, Usage
from gateway.money import EXACT

_UTC_NAMES = frozenset({"UTC", "utc", "Etc/UTC"})


@lru_cache(maxsize=64)
def _zone(name: str) -> timezone | ZoneInfo:
    return timezone.utc if name in _UTC_NAMES else ZoneInfo(name)


def local_time(at: datetime, tz: str) -> time:
    """The wall-clock time of `at` (an aware datetime) in the zone `tz`, naive."""
    return at.astimezone(_zone(tz)).time().replace(tzinfo=None)


def in_window(window: OffPeakWindow, at: datetime) -> bool:
    """Is `at` (an aware datetime) inside the daily window? `[start, end)`, crossing midnight when start > end."""
    return in_window_local(window, local_time(at, window.tz))


def in_window_local(window: OffPeakWindow, local: time) -> bool:
    """Is the wall-clock time `local` (in the window's zone) inside the window?"""
    if window.start == window.end:
        return True  # a 24-hour window
    if window.start < window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end


def window_unit_prices(price: Price, w: OffPeakWindow) -> UnitPrices:
    """The unit prices of `price` while its off-peak window `w` is in force."""
    label = f"off_peak {w.start:%H:%M}-{w.end:%H:%M} {w.tz}"
    cached = w.cached_input if w.cached_input is not None else w.input
    write = w.cache_write if w.cache_write is not None else w.input
    return UnitPrices(price.currency, price.per, w.input, cached, w.output, window=label, cache_write=write)


def tier_unit_prices(price: Price, chosen: Tier) -> UnitPrices:
    """The unit prices of `price` when its tier `chosen` applies (and no off-peak window is in force)."""
    cached = _tier_own(chosen.cached_input, price.cached_input, price, chosen)
    write = _tier_own(chosen.cache_write, price.cache_write, price, chosen)
    return UnitPrices(price.currency, price.per, chosen.input, cached, chosen.output, tier=chosen.up_to,
                      cache_write=write)


def _tier_own(own: Decimal | None, base: Decimal | None, price: Price, chosen: Tier) -> Decimal:
    """A cache price at a tier: the tier's own; else the base one if the tier keeps the base input price (the
    cache price is quoted against that input); else the tier's input price."""
    if own is not None:
        return own
    if base is not None and chosen.input == price.input:
        return base
    return chosen.input


def base_unit_prices(price: Price) -> UnitPrices:
    """The unit prices of a `price` without tiers, outside its off-peak windows."""
    cached = price.cached_input if price.cached_input is not None else price.input
    write = price.cache_write if price.cache_write is not None else price.input
    return UnitPrices(price.currency, price.per, price.input, cached, price.output, cache_write=write)


def choose_tier(tiers: tuple[Tier, ...], prompt_tokens: int) -> Tier:
    """The first tier whose `up_to` >= prompt tokens, or the last one when the prompt is longer than all."""
    for t in tiers:
        if prompt_tokens <= t.up_to:
            return t
    return tiers[-1]


def unit_prices(price: Price, prompt_tokens: int, at: datetime) -> UnitPrices:
    """The prices in force for a request with `prompt_tokens` that started at `at`.

    Precedence: an off-peak window in force replaces the base and tier prices (vendors publish window prices as
    absolute figures); otherwise the first tier whose `up_to` >= prompt tokens, or the last tier when the prompt is
    longer than all of them; otherwise the base price. `cached_input` and `cache_write` default to the input price
    of the same level.
    """
    for w in price.off_peak:
        if in_window(w, at):
            return window_unit_prices(price, w)
    if price.tiers:
        return tier_unit_prices(price, choose_tier(price.tiers, prompt_tokens))
    return base_unit_prices(price)


def _per_token(amount: Decimal, per: int) -> Decimal:
    # The schema only admits per 1K and 1M: a shift of the exponent, exact in EXACT (never a rounding division).
    if per == 1_000:
        return EXACT.scaleb(amount, -3)
    if per == 1_000_000:
        return EXACT.scaleb(amount, -6)
    raise ValueError(f"prices are per 1K or per 1M tokens, not per {per}")


def tokens_cost(tokens: int, unit_price: Decimal, per: int) -> Decimal:
    """Exact cost of `tokens` at `unit_price` per `per` tokens: 1001 tokens at 0.0005/1K -> 0.0005005."""
    if tokens == 0 or not unit_price:
        return ZERO  # the shared zero: the ledger's row path recognises it without arithmetic
    return _per_token(EXACT.multiply(Decimal(tokens), unit_price), per)


def price_usage(usage: Usage, price: Price, version: PriceVersion, started_at: datetime) -> Cost:
    """Bill a finished request: tier by the vendor's prompt tokens, window and version as of its start."""
    up = unit_prices(price, usage.prompt_tokens, started_at)
    return Cost(
        currency=up.currency,
        input=tokens_cost(usage.input_tokens, up.input, up.per),
        cached_input=tokens_cost(usage.cached_input_tokens, up.cached_input, up.per),
        output=tokens_cost(usage.output_tokens, up.output, up.per),
        reporting_currency=version.reporting_currency,
        fx_rate=version.fx(up.currency),
        price_version=version.version,
        unit_prices=up,
        cache_write=tokens_cost(usage.cache_write_tokens, up.cache_write, up.per),
    )


def expected_cost(up: UnitPrices, prompt_tokens: int, output_tokens: int, fx_rate: Decimal, *,
                  cached_tokens: int = 0, cache_write_tokens: int = 0) -> Decimal:
    """Ranking cost in the reporting currency, exact: the prompt's expected cache hits (`cached_tokens`) at the
    cached price, what it is expected to write to the vendor's cache (`cache_write_tokens`) at the cache-write
    price, the rest of the prompt (never below 0) at the input price, and the expected output at the output price.
    Without predictions (the defaults) the whole prompt is priced at input."""
    fresh = prompt_tokens
    if cached_tokens or cache_write_tokens:
        fresh = max(prompt_tokens - cached_tokens - cache_write_tokens, 0)
    amount = EXACT.add(EXACT.multiply(Decimal(fresh), up.input), EXACT.multiply(Decimal(output_tokens), up.output))
    if cached_tokens or cache_write_tokens:
        amount = EXACT.add(amount, EXACT.add(EXACT.multiply(Decimal(cached_tokens), up.cached_input),
                                             EXACT.multiply(Decimal(cache_write_tokens), up.cache_write)))
    if not amount:
        return Decimal(0)
    return EXACT.multiply(_per_token(amount, up.per), fx_rate)
