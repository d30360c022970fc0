"""Daily roll-ups: reports read from them equal reports read from the ledger, digit for digit, on both backends;
late rows and open rows never go missing."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger import rollup
from gateway.ledger.queries import fetch_partials
from gateway.ledger.reports import build_report, make_window, to_csv
from tests.ledger.conftest import T0, insert_rows, row

LATER = datetime(2027, 1, 1, tzinfo=timezone.utc)
FX = {1: {"USD": Decimal("7.10")}, 2: {"USD": Decimal("7.3")}}


def _rows(prefix: str = "r", n: int = 150) -> list[dict]:  # type: ignore[type-arg]
    return [row(f"{prefix}{i}", T0 + timedelta(hours=5 * i, minutes=i), team=f"t{i % 3}",
                route="auto" if i % 2 else "premium", provider="deepseek" if i % 4 else "volcengine",
                model="m1" if i % 5 else "m2", key_id=f"k{i % 2}", price_version=1 + i % 2, tokens=(i, i % 3, 2),
                costs=(f"0.00{i:03d}7", "0.000001", "0.3"), baseline=None if i % 6 == 0 else "1.1")
            for i in range(n)]


async def _both(engine: AsyncEngine, start: str, end: str, group_by: tuple[str, ...], currency: str = "CNY",
                filters: dict[str, str] | None = None) -> tuple[str, str]:
    window = make_window(start, end)
    out = []
    for use in (True, False):
        parts = await fetch_partials(engine, window, group_by, filters, use_rollup=use)
        out.append(to_csv(build_report(parts, window, group_by, currency, FX.__getitem__)))
    return out[0], out[1]


async def test_reports_from_rollups_equal_reports_from_the_ledger(engine: AsyncEngine) -> None:
    await insert_rows(engine, _rows())
    assert await rollup.roll_up_closed(engine, LATER, settle_s=0) >= 31
    window = make_window("2026-11-01T06:00", "2026-11-28T18:30")
    assert await rollup.rolled_span(engine, window) == (datetime(2026, 11, 2, tzinfo=timezone.utc),
                                                        datetime(2026, 11, 28, tzinfo=timezone.utc))
    for group_by in [(), ("day",), ("month", "provider"), ("team", "model"), ("route", "day", "provider")]:
        for currency in ("CNY", "USD"):
            for start, end in [("2026-11-01", "2026-12-01"), ("2026-11-01T06:00", "2026-11-28T18:30"),
                               ("2026-11-03", "2026-11-04")]:
                fast, direct = await _both(engine, start, end, group_by, currency)
                assert fast == direct, (group_by, currency, start, end)
    fast, direct = await _both(engine, "2026-11-01", "2026-12-01", ("provider",), filters={"team": "t1",
                                                                                           "route": "auto"})
    assert fast == direct and fast.count("\n") == 2 and "\ndeepseek,24," in fast


async def test_a_late_row_for_a_rolled_up_day_is_counted_and_the_day_rolled_again(engine: AsyncEngine) -> None:
    await insert_rows(engine, _rows(n=40))
    await rollup.roll_up_closed(engine, LATER, settle_s=0)
    await insert_rows(engine, [row("late", T0 + timedelta(days=2, hours=3), costs=("5", "0", "5"))])
    window = make_window("2026-11-01", "2026-11-10")
    assert await rollup.rolled_span(engine, window) is None  # counts disagree: the ledger is read instead
    fast, direct = await _both(engine, "2026-11-01", "2026-11-10", ("day",))
    assert fast == direct and "2026-11-03" in fast
    assert await rollup.forget_changed_days(engine, date(2026, 12, 1)) == [date(2026, 11, 3)]
    await rollup.roll_up_closed(engine, LATER, settle_s=0)
    assert await rollup.rolled_span(engine, window) is not None
    fast, direct = await _both(engine, "2026-11-01", "2026-11-10", ("day",))
    assert fast == direct


async def test_a_day_with_open_rows_or_not_yet_over_is_not_rolled_up(engine: AsyncEngine) -> None:
    await insert_rows(engine, [row("a", T0, costs=("1", "0", "1")),
                               row("open", T0 + timedelta(days=1), status="in_flight", finished_at=None,
                                   usage_source=None)])
    assert await rollup.roll_up_day(engine, T0.date() + timedelta(days=1)) is False
    assert await rollup.roll_up_closed(engine, T0 + timedelta(hours=30), settle_s=7 * 3600) == 0  # ended 6 h ago
    assert await rollup.roll_up_closed(engine, T0 + timedelta(hours=30), settle_s=0) == 1  # 11-01; 11-02 is open


def test_reports_by_key_or_at_an_offset_read_the_ledger() -> None:
    utc = make_window("2026-11-01", "2026-12-01")
    assert rollup.usable(("team", "day"), {"provider": "x"}, utc)
    assert not rollup.usable(("key",), None, utc)
    assert not rollup.usable((), {"key": "k1"}, utc)
    assert not rollup.usable(("day",), None, make_window("2026-11-01T00:00+08:00", "2026-12-01T00:00+08:00"))


@pytest.mark.parametrize("n", [0])
async def test_an_empty_ledger_rolls_nothing(engine: AsyncEngine, n: int) -> None:
    assert await rollup.roll_up_closed(engine, LATER, settle_s=0) == n


def test_money_pieces_are_exact_or_refused() -> None:
    from gateway.ledger.queries import combine

    for text in ("0", "1", "0.000000000000000001", "123456789012345.123456789987654321", "7.1"):
        amount = Decimal(text)
        assert combine(rollup.pieces(amount), "sqlite") == amount
    for bad in ("0.0000000000000000001", "-1"):
        with pytest.raises(ValueError):
            rollup.pieces(Decimal(bad))


def test_a_ledger_sum_the_rollup_lacks_turns_rollups_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.ledger import queries

    utc = make_window("2026-11-01", "2026-12-01")
    assert rollup.usable(("team",), None, utc)
    monkeypatch.setattr(queries, "SUMMED_MONEY", (*queries.SUMMED_MONEY, "a_new_cost_reporting"))
    assert not rollup.usable(("team",), None, utc)
