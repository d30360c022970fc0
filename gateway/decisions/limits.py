"""Budgets and rate limits as arithmetic over plain counters: no I/O, no clocks read here.

Money in counters is an integer number of *units*: 1e-9 of the reporting currency. Costs can have more decimal
places than that (7 tokens x 0.0000008 x fx 7.1234), so the conversions round in the direction that keeps a
budget safe:

- a budget limit is rounded DOWN to units (`limit_units`): the counter may never admit more than the budget;
- a reservation (worst case) is rounded UP (`cost_units`): it never reserves less than the request can cost;
- a settlement (actual cost) is rounded UP as well: the counter never records less than was really spent.

So the counter always over-states true spend by less than one unit per request, and admission requires
`spent + reserved + ceil(worst_case) <= floor(limit)`. Settling replaces a reservation by `ceil(actual)`, which is
at most the reservation whenever actual <= worst case, so counter totals only shrink on settlement. True spend is
<= counter <= floor(limit) <= limit: rounding can refuse a request a hair early, never let one overspend.

Periods are calendar days or months in the reporting time zone. Rate limits are token buckets (the Redis Lua
script in `gateway/limits/ratelimit.py` does the same arithmetic; tests keep the two in step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.decisions.pricing import tokens_cost
from gateway.domain import UnitPrices
from gateway.money import EXACT, money_str

BudgetPeriod = Literal["day", "month"]
PERIODS: tuple[BudgetPeriod, ...] = ("day", "month")

_UNIT_EXPONENT = 9
UNITS_PER_CURRENCY = 10**_UNIT_EXPONENT
# Counters hold any integer exactly (Python ints here; decimal strings in the Redis scripts), so a budget's only
# bounds are sanity and its column: below 10**30 per period, its text at most 64 characters.
MAX_BUDGET = Decimal(10) ** 30
_MAX_BUDGET_TEXT = 64


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit in the reporting currency per calendar period."""

    amount: Decimal
    period: BudgetPeriod

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"budget period must be day or month, got {self.period!r}")
        if not self.amount.is_finite() or self.amount < 0:
            raise ValueError(f"budget must be a non-negative amount, got {self.amount}")


def parse_budget(amount: object, period: object) -> Budget | None:
    """Budget from user input (CLI, admin API): both or neither; amounts as exact decimals (never floats)."""
    if amount is None and period is None:
        return None
    if amount is None or period is None:
        raise ValueError("budget and budget_period go together (budget_period: day or month)")
    if isinstance(amount, (float, bool)):
        raise ValueError("budget must be an exact decimal (send it as a string, e.g. \"100.50\")")
    try:
        value = Decimal(str(amount).strip())
    except Exception:
        raise ValueError(f"budget is not a decimal number: {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"budget must be a non-negative amount, got {amount!r}")
    if period not in PERIODS:
        raise ValueError(f"budget_period must be day or month, got {period!r}")
    if value >= MAX_BUDGET or len(money_str(value)) > _MAX_BUDGET_TEXT:
        raise ValueError(f"budget must be below {MAX_BUDGET:,f} per period, in at most {_MAX_BUDGET_TEXT} characters")
    return Budget(value, period)  # type: ignore[arg-type]


# --- money <-> units -------------------------------------------------------------------------------------------

def cost_units(amount: Decimal) -> int:
    """A cost in units, rounded UP (reservations and settlements: never under-count spend)."""
    if amount <= 0:
        return 0
    # scaleb in the exact context: the default one keeps 28 digits and would round a large amount.
    return int(EXACT.scaleb(amount, _UNIT_EXPONENT).to_integral_value(rounding=ROUND_CEILING))


def limit_units(amount: Decimal) -> int:
    """A budget limit in units, rounded DOWN (never admit more than the budget)."""
    return int(EXACT.scaleb(amount, _UNIT_EXPONENT).to_integral_value(rounding=ROUND_FLOOR))


def units_to_money(units: int) -> Decimal:
    return EXACT.normalize(EXACT.scaleb(Decimal(units), -_UNIT_EXPONENT)) if units else Decimal(0)


def worst_case_cost(prompt_tokens: int, output_tokens: int, prices: UnitPrices, fx_rate: Decimal) -> Decimal:
    """Reporting-currency worst case: every prompt token at the dearest prompt price (cache hits and writes are
    unknown before the request; a cache write can cost more than input) plus every allowed output token at the
    output price."""
    input_price = max(prices.input, prices.cached_input, prices.cache_write)
    # In the exact context, as every other money computation: budgets reach 10^30 units, past the default 28 digits.
    return EXACT.multiply(EXACT.add(tokens_cost(prompt_tokens, input_price, prices.per),
                                    tokens_cost(output_tokens, prices.output, prices.per)), fx_rate)


# --- budget admission --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CounterState:
    """One scope's counter for one period, in units: settled spend and outstanding reservations."""

    spent: int
    reserved: int


def admits(counter: CounterState, limit: int, amount: int) -> bool:
    """Whether `amount` more units fit: settled + reserved + amount <= limit (inclusive)."""
    return counter.spent + counter.reserved + amount <= limit


def remaining(counter: CounterState, limit: int) -> int:
    return max(0, limit - counter.spent - counter.reserved)


# --- calendar periods --------------------------------------------------------------------------------------------

def _zone(tz: str) -> ZoneInfo | timezone:
    return timezone.utc if tz.upper() == "UTC" else ZoneInfo(tz)


def period_start(now: datetime, period: BudgetPeriod, tz: str) -> datetime:
    """Start of the calendar day/month containing `now` (aware), in the reporting time zone, as aware UTC."""
    local = now.astimezone(_zone(tz))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    # Re-attach the zone: a DST change between `now` and midnight shifts the offset of midnight itself.
    start = start.replace(tzinfo=None).replace(tzinfo=_zone(tz))
    return start.astimezone(timezone.utc)


def period_end(now: datetime, period: BudgetPeriod, tz: str) -> datetime:
    """Start of the next period, as aware UTC."""
    zone = _zone(tz)
    local = period_start(now, period, tz).astimezone(zone).replace(tzinfo=None)
    if period == "day":
        nxt = local + timedelta(days=1)
    else:
        nxt = local.replace(year=local.year + 1, month=1) if local.month == 12 else local.replace(month=local.month + 1)
    return nxt.replace(tzinfo=zone).astimezone(timezone.utc)


def period_id(now: datetime, period: BudgetPeriod, tz: str) -> str:
    """A stable name for the period, e.g. `d2024-05-21` or `m2024-05` (dates in the reporting zone)."""
    local = now.astimezone(_zone(tz))
    return f"d{local:%Y-%m-%d}" if period == "day" else f"m{local:%Y-%m}"


LATE_SETTLEMENT_S = 86_400


def counter_ttl_s(now: datetime, period: BudgetPeriod, tz: str) -> int:
    """How long a period's counter is worth keeping: to the period's end plus a day for late settlements."""
    return max(1, math.ceil((period_end(now, period, tz) - now).total_seconds())) + LATE_SETTLEMENT_S


# --- token buckets (rpm / tpm) -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float  # seconds, on whatever clock the caller uses consistently


@dataclass(frozen=True, slots=True)
class BucketDecision:
    allowed: bool
    bucket: Bucket  # the new state (unchanged tokens when refused, apart from refill)
    retry_after_s: float  # 0 when allowed


def bucket_take(bucket: Bucket | None, now: float, per_minute: int, cost: float) -> BucketDecision:
    """A token bucket of capacity `per_minute`, refilled at per_minute/60 per second, full when new.

    A request costing more than the whole capacity (tpm smaller than one prompt) is charged the capacity:
    it waits for a full bucket instead of being refused forever.
    """
    rate = per_minute / 60.0
    cost = min(cost, float(per_minute))
    if bucket is None:
        tokens = float(per_minute)
    else:
        tokens = min(float(per_minute), bucket.tokens + max(0.0, now - bucket.updated) * rate)
    if tokens >= cost:
        return BucketDecision(True, Bucket(tokens - cost, now), 0.0)
    wait = (cost - tokens) / rate if rate > 0 else math.inf
    return BucketDecision(False, Bucket(tokens, now), wait)


def retry_after_header(wait_s: float) -> int:
    """Whole seconds for `Retry-After`: rounded up, at least 1."""
    if math.isinf(wait_s):
        return 60
    return max(1, math.ceil(wait_s - 1e-9))
