"""Report filters and regrouping (the console's spend page): one query re-summed equals the direct queries."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger.queries import fetch_partials
from gateway.ledger.reports import build_report, make_window, regroup, to_csv
from tests.ledger.conftest import T0, insert_rows, row

FX = {1: {"USD": Decimal("7.10")}, 2: {"USD": Decimal("7.3")}}


async def _rows(engine: AsyncEngine) -> None:
    await insert_rows(engine, [
        row(f"r{i}", T0 + timedelta(hours=7 * i), team=f"t{i % 3}", route="auto" if i % 2 else "premium",
            provider="deepseek" if i % 4 else "volcengine", model="m1" if i % 5 else "m2",
            price_version=1 + i % 2, tokens=(i, i % 3, 2), costs=(f"0.00{i:02d}7", "0.000001", "0.3"),
            baseline=None if i % 6 == 0 else "1.1")
        for i in range(80)])


@pytest.mark.parametrize("currency", ["CNY", "USD"])
async def test_regrouped_partials_give_the_same_report_digit_for_digit(engine: AsyncEngine, currency: str) -> None:
    await _rows(engine)
    window = make_window("2026-11-01", "2026-12-01")
    fetched = ("day", "provider", "team", "model")
    partials = await fetch_partials(engine, window, fetched)
    for wanted in [(), ("provider",), ("team", "model"), ("day", "provider"), ("model", "day")]:
        direct = build_report(await fetch_partials(engine, window, wanted), window, wanted, currency,
                              FX.__getitem__)
        re_summed = build_report(regroup(partials, fetched, wanted), window, wanted, currency, FX.__getitem__)
        assert re_summed == direct, wanted
        assert to_csv(re_summed) == to_csv(direct)


async def test_filters_narrow_the_report_to_one_value_each(engine: AsyncEngine) -> None:
    await _rows(engine)
    window = make_window("2026-11-01", "2026-12-01")
    whole = build_report(await fetch_partials(engine, window, ("team", "provider")), window, ("team", "provider"),
                         "CNY")
    only = build_report(await fetch_partials(engine, window, ("team", "provider"), {"team": "t1",
                                                                                     "provider": "deepseek"}),
                        window, ("team", "provider"), "CNY")
    assert [keys for keys, _ in only.rows] == [("t1", "deepseek")]
    assert only.total == dict(whole.rows)[("t1", "deepseek")]
    nothing = await fetch_partials(engine, window, (), {"route": "no-such-route"})
    assert nothing == []
    with pytest.raises(ValueError, match="unknown filter"):
        await fetch_partials(engine, window, (), {"status": "success"})
