"""What-if re-pricing of recorded tokens, per group, at each row's own start time."""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain import OffPeakWindow, Price, PriceVersion
from gateway.ledger.queries import stream_usage
from gateway.ledger.reports import make_window
from gateway.ledger.reprice import reprice, total, with_prices
from tests.ledger.conftest import T0, insert_rows, row

OLD = PriceVersion(1, T0, "CNY", {}, {
    ("deepseek", "deepseek-v3"): Price("CNY", 1_000_000, Decimal(2), Decimal(8)),
    ("volcengine", "doubao-pro-32k"): Price("CNY", 1000, Decimal("0.0008"), Decimal("0.002")),
})
# DeepSeek-style cut: half price from 16:30 to 00:30 UTC.
CUT = with_prices(OLD, {("deepseek", "deepseek-v3"): Price(
    "CNY", 1_000_000, Decimal(2), Decimal(8),
    off_peak=(OffPeakWindow(time(16, 30), time(0, 30), "UTC", Decimal(1), Decimal(4)),))})


async def test_reprice_applies_windows_at_each_rows_start_and_groups(engine: AsyncEngine) -> None:
    await insert_rows(engine, [
        row("peak", T0 + timedelta(hours=10), provider="deepseek", model="deepseek-v3", tokens=(1000, 0, 1000),
            costs=("0.002", "0", "0.008")),
        row("night", T0 + timedelta(hours=17), provider="deepseek", model="deepseek-v3", tokens=(1000, 0, 1000),
            costs=("0.002", "0", "0.008")),
        row("doubao", T0 + timedelta(hours=17), tokens=(1000, 0, 1000), costs=("0.0008", "0", "0.002")),
        row("unknown", T0, provider="gone", model="old-model", tokens=(5, 0, 5), costs=("1", "0", "0")),
        row("outside", T0 + timedelta(days=40), provider="deepseek", model="deepseek-v3", tokens=(1, 0, 1)),
    ])
    window = make_window("2026-11-01", "2026-12-01")
    rows = [r async for r in stream_usage(engine, window)]
    lines = dict(reprice(rows, CUT, ("provider",)))
    ds = lines[("deepseek",)]
    assert ds.requests == 2 and ds.actual_cost == Decimal("0.02")
    assert ds.repriced_cost == Decimal("0.015")  # the night request at half price
    assert ds.difference == Decimal("-0.005")
    assert lines[("volcengine",)].difference == 0
    assert lines[("gone",)].unpriced == 1 and lines[("gone",)].repriced_cost == Decimal(1)
    assert total(lines.items()).requests == 4
    by_day = reprice(rows, CUT, ("day",))
    assert [k for k, _ in by_day] == [("2026-11-01",)]
