"""Storage: money as exact fixed-point text (SQLite) or NUMERIC (PostgreSQL); the migration matches the tables."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger.tables import ledger, money_text, replicas, row_scale


def test_money_text_is_fixed_point_with_at_least_18_decimals() -> None:
    assert money_text(Decimal("0.0000056")) == "0.000005600000000000"
    assert money_text(Decimal("12")) == "12.000000000000000000"
    assert money_text(Decimal("1E+3")) == "1000.000000000000000000"
    assert money_text(Decimal("-0")) == "0.000000000000000000"
    assert money_text(Decimal("1E-20")) == "0." + "0" * 19 + "1" + "0" * 7  # widened to 27 decimals, exact
    assert row_scale(Decimal("0.1"), None, Decimal("1E-20")) == 27
    with pytest.raises(ValueError):
        money_text(Decimal("-0.01"))
    with pytest.raises(ValueError):
        money_text(Decimal("NaN"))


async def test_migration_creates_the_current_schema_and_money_round_trips(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda c: {t: [col["name"] for col in sa.inspect(c).get_columns(t)]
                                                 for t in ("ledger", "ledger_replicas")})
    assert columns["ledger"] == [c.name for c in ledger.columns]
    assert columns["ledger_replicas"] == [c.name for c in replicas.columns]
    value = Decimal("0.1234567890123456789012")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE money_probe (m TEXT)") if engine.dialect.name == "sqlite"
                           else sa.text("CREATE TABLE money_probe (m NUMERIC)"))
        probe = sa.Table("money_probe", sa.MetaData(), sa.Column("m", ledger.c.input_cost.type))
        await conn.execute(probe.insert(), [{"m": value}])
        assert (await conn.execute(sa.select(probe.c.m))).scalar() == value
        with pytest.raises(sa.exc.StatementError):
            await conn.execute(probe.insert(), [{"m": 0.1}])  # a float never reaches the ledger
