"""Spend already billed, from the ledger: what a budget counter is seeded with when it does not exist
(a new period, Redis lost its data, or a process starting without Redis).

Reads `gateway.ledger.tables.ledger`: `team`, `key_id`, `started_at` and the exact reporting-currency total
`total_cost_reporting`. A request counts in the period it *started* in (as its reservation did). Rows still
`in_flight` have no cost yet and count as zero: their reservations are what protects the budget while they run.
PostgreSQL sums NUMERIC exactly in SQL; on SQLite the column is fixed-point text, summed here as Decimal.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger.tables import ledger


async def spend_since(engine: AsyncEngine, *, team: str | None = None, key_id: str | None = None,
                      since: datetime) -> Decimal:
    """Reporting-currency spend of a key or a team on requests started at or after `since` (aware)."""
    if (team is None) == (key_id is None):
        raise ValueError("spend_since needs exactly one of team or key_id")
    cost = ledger.c.total_cost_reporting
    where = [ledger.c.team == team] if team is not None else [ledger.c.key_id == key_id]
    where += [ledger.c.started_at >= since, cost.is_not(None)]
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            value = (await conn.execute(sa.select(sa.func.sum(cost)).where(*where))).scalar()
            return Decimal(value) if value is not None else Decimal(0)
        total = Decimal(0)
        result = await conn.stream(sa.select(cost).where(*where))
        async for (value,) in result:
            total += value
        return total
