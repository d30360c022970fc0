"""Spend already billed, from the ledger: what a budget counter is re-seeded with when it is missing
(a new period, Redis lost its data, or a process starting without Redis).

ASSUMPTION (the ledger is built in parallel): the ledger table is `gateway.ledger.tables.LEDGER_TABLE_NAME`
(default `ledger`) with columns `team`, `key_id`, `started_at` and the exact reporting-currency total as decimal
text in `total_cost_reporting`. Rows still `in_flight` carry no cost and count as zero (their reservations are
what protects the budget while they run). Costs are summed as Decimal in Python, never by SQL over floats.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

_TABLE = "ledger"
_COST = "total_cost_reporting"


def _ledger_table() -> sa.Table:
    try:  # prefer the ledger's own definition when it exists
        from gateway.ledger import tables as ledger_tables  # type: ignore[attr-defined]

        table = getattr(ledger_tables, "ledger", None)
        if isinstance(table, sa.Table):
            return table
    except ImportError:
        pass
    return sa.table(_TABLE, sa.column("team"), sa.column("key_id"), sa.column("started_at"), sa.column(_COST))


async def spend_since(engine: AsyncEngine, *, team: str | None = None, key_id: str | None = None,
                      since: datetime) -> Decimal:
    """Reporting-currency spend of a key or a team on requests started at or after `since`."""
    if (team is None) == (key_id is None):
        raise ValueError("spend_since needs exactly one of team or key_id")
    t = _ledger_table()
    cost = t.c[_COST]
    where = t.c.team == team if team is not None else t.c.key_id == key_id
    query = sa.select(cost).where(where, t.c.started_at >= since, cost.is_not(None))
    total = Decimal(0)
    async with engine.connect() as conn:
        result = await conn.stream(query)
        async for (value,) in result:
            total += Decimal(str(value))
    return total
