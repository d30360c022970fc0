"""Pure budget and rate-limit arithmetic: rounding direction, calendar periods, token buckets."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from gateway.decisions import limits as d
from gateway.domain import UnitPrices


def test_cost_rounds_up_and_limit_rounds_down() -> None:
    # 7 tokens x 0.0000008 x 7.1234 = 0.00003989104 exactly: more decimals than 1e-9.
    cost = 7 * Decimal("0.0000008") * Decimal("7.1234")
    assert d.cost_units(cost) == 39892  # 39891.04 units, rounded up
    assert d.cost_units(Decimal("0.000000001")) == 1
    assert d.cost_units(Decimal("0.0000000001")) == 1  # a sub-unit cost still counts
    assert d.cost_units(Decimal(0)) == 0
    assert d.limit_units(Decimal("0.0000000019")) == 1  # a limit never rounds up
    assert d.limit_units(Decimal("100")) == 100 * 10**9
    assert d.units_to_money(39892) == Decimal("0.000039892")


def test_rounding_never_lets_counted_spend_under_state_true_spend() -> None:
    limit = Decimal("0.0001")
    cost = 7 * Decimal("0.0000008") * Decimal("7.1234")
    n = d.limit_units(limit) // d.cost_units(cost)  # requests the counter admits
    assert n * cost <= limit
    assert (n + 1) * d.cost_units(cost) > d.limit_units(limit)


def test_worst_case_cost_uses_full_input_price_and_fx() -> None:
    prices = UnitPrices(currency="USD", per=1_000_000, input=Decimal("2.5"), cached_input=Decimal("1.25"),
                        output=Decimal("10"))
    assert d.worst_case_cost(1000, 500, prices, Decimal("7.10")) == Decimal("0.05325")


def test_worst_case_cost_prices_the_prompt_at_cache_write_where_writing_costs_more() -> None:
    prices = UnitPrices(currency="USD", per=1_000_000, input=Decimal("3"), cached_input=Decimal("0.3"),
                        output=Decimal("15"), cache_write=Decimal("3.75"))
    assert d.worst_case_cost(1000, 500, prices, Decimal("7.10")) == Decimal("0.079875")  # (3750 + 7500) / 1M x 7.10


def test_admission_is_inclusive() -> None:
    c = d.CounterState(spent=40, reserved=50)
    assert d.admits(c, 100, 10)
    assert not d.admits(c, 100, 11)
    assert d.remaining(c, 100) == 10


@pytest.mark.parametrize("now,period,tz,start,end,pid", [
    (datetime(2024, 5, 20, 17, 0, tzinfo=timezone.utc), "day", "Asia/Shanghai",
     datetime(2024, 5, 20, 16, 0, tzinfo=timezone.utc), datetime(2024, 5, 21, 16, 0, tzinfo=timezone.utc),
     "d2024-05-21"),
    (datetime(2024, 5, 31, 16, 30, tzinfo=timezone.utc), "month", "Asia/Shanghai",
     datetime(2024, 5, 31, 16, 0, tzinfo=timezone.utc), datetime(2024, 6, 30, 16, 0, tzinfo=timezone.utc),
     "m2024-06"),
    (datetime(2024, 12, 31, 23, 59, tzinfo=timezone.utc), "month", "UTC",
     datetime(2024, 12, 1, tzinfo=timezone.utc), datetime(2025, 1, 1, tzinfo=timezone.utc), "m2024-12"),
    # New York springs forward on 2024-03-10: that day is 23 hours long.
    (datetime(2024, 3, 10, 12, 0, tzinfo=timezone.utc), "day", "America/New_York",
     datetime(2024, 3, 10, 5, 0, tzinfo=timezone.utc), datetime(2024, 3, 11, 4, 0, tzinfo=timezone.utc),
     "d2024-03-10"),
])
def test_calendar_periods_in_reporting_zone(now, period, tz, start, end, pid) -> None:  # type: ignore[no-untyped-def]
    assert d.period_start(now, period, tz) == start
    assert d.period_end(now, period, tz) == end
    assert d.period_id(now, period, tz) == pid
    assert d.counter_ttl_s(now, period, tz) > (end - now).total_seconds()


def test_parse_budget() -> None:
    assert d.parse_budget("100.50", "month") == d.Budget(Decimal("100.50"), "month")
    assert d.parse_budget(None, None) is None
    for amount, period in [(1.5, "day"), ("-1", "day"), ("10", "week"), ("10", None), ("abc", "day"),
                           ("1e30", "month"), ("NaN", "day"), ("Infinity", "day"), ("0." + "1" * 70, "day")]:
        with pytest.raises(ValueError):
            d.parse_budget(amount, period)


@pytest.mark.parametrize("amount", ["9007199.254740992", "10000000", "123456789012345678901.123456789"])
def test_budgets_beyond_what_a_double_holds_are_exact(amount: str) -> None:
    """Issue 15: budgets above ~9 million per period were refused (2**53 units); they hold exactly now."""
    budget = d.parse_budget(amount, "month")
    assert budget is not None and budget.amount == Decimal(amount)
    units = d.limit_units(budget.amount)
    assert d.units_to_money(units) == Decimal(amount)
    assert d.cost_units(Decimal(amount)) == units


def test_token_bucket_refills_and_reports_wait() -> None:
    b = None
    for _ in range(3):
        dec = d.bucket_take(b, 0.0, 3, 1)
        assert dec.allowed
        b = dec.bucket
    refused = d.bucket_take(b, 0.0, 3, 1)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(20.0)
    assert d.retry_after_header(refused.retry_after_s) == 20
    assert d.bucket_take(refused.bucket, 20.0, 3, 1).allowed


def test_token_bucket_caps_oversized_cost_at_capacity() -> None:
    full = d.bucket_take(None, 0.0, 100, 5000)
    assert full.allowed and full.bucket.tokens == 0
    assert not d.bucket_take(full.bucket, 30.0, 100, 5000).allowed
    assert d.bucket_take(full.bucket, 60.0, 100, 5000).allowed


def test_retry_after_header_is_whole_seconds_at_least_one() -> None:
    assert d.retry_after_header(0.01) == 1
    assert d.retry_after_header(1.2) == 2
    assert d.retry_after_header(float("inf")) == 60
