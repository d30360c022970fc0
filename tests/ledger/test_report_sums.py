"""Report sums straight from the database: exact on both backends, windows, groups, offsets, conversion."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger.queries import fetch_partials
from gateway.ledger.reports import Report, ReportError, build_report, make_window
from tests.ledger.conftest import T0, insert_rows, row


async def report(engine: AsyncEngine, start: str, end: str, group_by: tuple[str, ...] = (),
                 currency: str = "CNY", fx=None) -> Report:  # type: ignore[no-untyped-def]
    window = make_window(start, end)
    return build_report(await fetch_partials(engine, window, group_by), window, group_by, currency, fx)


async def test_100k_tiny_costs_sum_exactly(engine: AsyncEngine) -> None:
    # 7 tokens at 0.0008 per 1K = 0.0000056 each; a float sum would drift in the last digits.
    tiny = "0.0000056"
    base = row("r", T0, tokens=(7, 0, 7), costs=(tiny, "0", tiny), baseline="0.0001")
    rows = [{**base, "request_id": f"r{i}", "started_at": T0 + timedelta(seconds=i)} for i in range(100_000)]
    await insert_rows(engine, rows)
    rep = await report(engine, "2026-11-01", "2026-12-01")
    (_, line), = rep.rows
    assert line.requests == 100_000
    assert line.input_tokens == 700_000 and line.output_tokens == 700_000
    assert line.input_cost == Decimal("0.56") and line.output_cost == Decimal("0.56")
    assert line.total_cost == Decimal("1.12")
    assert line.baseline_cost == Decimal("10") and line.savings == Decimal("8.88")


async def test_group_by_combinations_split_and_add_up(engine: AsyncEngine) -> None:
    rows = []
    for i in range(60):
        rows.append(row(f"r{i}", T0 + timedelta(hours=13 * i), team=f"t{i % 3}", key_id=None if i % 5 else "k",
                        route="auto" if i % 2 else "premium", provider="deepseek" if i % 4 else "volcengine",
                        model="m1" if i % 4 else "m2", tokens=(i, 0, 1), costs=(f"0.00{i:02d}1", "0", "0.5")))
    await insert_rows(engine, rows)
    whole = await report(engine, "2026-11-01", "2026-12-01")
    for group_by in [("team",), ("day",), ("month",), ("team", "provider", "model"), ("key", "route"),
                     ("day", "team"), ("month", "provider")]:
        rep = await report(engine, "2026-11-01", "2026-12-01", group_by)
        assert rep.total == whole.total, group_by
        assert sum(line.requests for _, line in rep.rows) == whole.total.requests
        assert len({keys for keys, _ in rep.rows}) == len(rep.rows)
    teams = await report(engine, "2026-11-01", "2026-12-01", ("team",))
    assert [k for k, _ in teams.rows] == [("t0",), ("t1",), ("t2",)]
    expected_t1 = sum(Decimal(f"0.00{i:02d}1") + Decimal("0.5") for i in range(60) if i % 3 == 1 and i * 13 < 720)
    assert dict(teams.rows)[("t1",)].total_cost == expected_t1
    keys = await report(engine, "2026-11-01", "2026-12-01", ("key",))
    assert {k for k, _ in keys.rows} == {("",), ("k",)}
    days = await report(engine, "2026-11-01", "2026-12-01", ("day",))
    assert days.rows[0][0] == ("2026-11-01",) and days.rows[0][1].requests == 2  # 00:00 and 13:00


async def test_from_is_inclusive_and_to_exclusive(engine: AsyncEngine) -> None:
    end = T0 + timedelta(days=1)
    await insert_rows(engine, [
        row("before", T0 - timedelta(microseconds=1), costs=("1", "0", "0")),
        row("at-from", T0, costs=("2", "0", "0")),
        row("inside", T0 + timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999), costs=("4", "0", "0")),
        row("at-to", end, costs=("8", "0", "0")),
    ])
    rep = await report(engine, "2026-11-01", "2026-11-02")
    assert rep.total.requests == 2 and rep.total.total_cost == Decimal(6)
    rep = await report(engine, "2026-11-01T00:00:00.000001", "2026-11-02T00:00:00.000001")
    assert rep.total.total_cost == Decimal(12)


async def test_time_zone_offset_moves_window_and_day_buckets(engine: AsyncEngine) -> None:
    # 2026-11-01 16:00 UTC is already 2026-11-02 00:00 in UTC+8.
    await insert_rows(engine, [
        row("a", T0 + timedelta(hours=15, minutes=59), costs=("1", "0", "0")),
        row("b", T0 + timedelta(hours=16), costs=("2", "0", "0")),
        row("c", T0 - timedelta(hours=8), costs=("4", "0", "0")),  # 2026-11-01 00:00 +08:00
        row("d", T0 - timedelta(hours=8, seconds=1), costs=("8", "0", "0")),
    ])
    rep = await report(engine, "2026-11-01T00:00:00+08:00", "2026-11-03T00:00:00+08:00", ("day",))
    assert [(k, ln.total_cost) for k, ln in rep.rows] == [(("2026-11-01",), Decimal(5)), (("2026-11-02",), Decimal(2))]
    utc = await report(engine, "2026-10-31", "2026-11-03", ("day",))
    assert [(k, ln.total_cost) for k, ln in utc.rows] == [
        (("2026-10-31",), Decimal(12)), (("2026-11-01",), Decimal(3))]


async def test_more_than_18_decimals_stays_exact(engine: AsyncEngine) -> None:
    fine = "0.0000000000000000000123"  # 22 decimals: stored wider, summed by the exact slow path
    await insert_rows(engine, [row("w1", T0, costs=(fine, "0", "0.5")), row("w2", T0, costs=(fine, "0", "0.5")),
                               row("n1", T0, costs=("0.25", "0", "0"))])
    rep = await report(engine, "2026-11-01", "2026-11-02", ("team",))
    assert rep.total.input_cost == Decimal("0.2500000000000000000246")
    assert rep.total.total_cost == Decimal("1.2500000000000000000246")


async def test_currency_conversion_uses_each_rows_price_version(engine: AsyncEngine) -> None:
    await insert_rows(engine, [row("v1", T0, price_version=1, costs=("7.10", "0", "0"), baseline="14.20"),
                               row("v2", T0, price_version=2, costs=("7.20", "0", "0"))])
    fx = {1: {"USD": Decimal("7.10")}, 2: {"USD": Decimal("7.20")}}
    rep = await report(engine, "2026-11-01", "2026-11-02", (), "USD", fx.__getitem__)
    line = rep.rows[0][1]
    assert line.total_cost == Decimal(2) and line.baseline_cost == Decimal(2) and line.savings == Decimal(1)
    with pytest.raises(ReportError, match="no FX rate for EUR"):
        await report(engine, "2026-11-01", "2026-11-02", (), "EUR", fx.__getitem__)


async def test_in_flight_and_failed_rows_count_as_requests_with_no_cost(engine: AsyncEngine) -> None:
    await insert_rows(engine, [row("ok", T0, costs=("1", "0", "1")),
                               row("open", T0, status="in_flight", finished_at=None, usage_source=None),
                               row("err", T0, status="upstream_error")])
    rep = await report(engine, "2026-11-01", "2026-11-02")
    assert rep.total.requests == 3 and rep.total.total_cost == Decimal(2)
    assert rep.total.baseline_cost is None and rep.total.savings is None
