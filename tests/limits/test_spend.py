"""The ledger query budgets are re-seeded from: exact, per key or team, from a period's start."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade
from gateway.ledger.tables import ledger
from gateway.limits.spend import spend_since


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path, pg_url: str) -> AsyncIterator[AsyncEngine]:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else pg_url
    e = create_engine(url)
    await upgrade(e)
    async with e.begin() as conn:
        await conn.execute(ledger.delete())
    yield e
    await e.dispose()


def _row(i: int, team: str, key_id: str | None, started: datetime, cost: str | None) -> dict[str, object]:
    money = Decimal(cost) if cost is not None else None
    return dict(request_id=f"r{i}", started_at=started, replica_id="x", team=team, key_id=key_id, route="auto",
                provider="p", model="m", upstream_model="m", price_version=1, stream=False,
                prompt_tokens_estimate=1, input_tokens=1, cached_input_tokens=0, output_tokens=1,
                total_cost_reporting=money, money_scale=18, status="success" if cost else "in_flight", attempts=1)


async def test_spend_since(engine: AsyncEngine) -> None:
    may = datetime(2024, 5, 1, tzinfo=timezone.utc)
    rows = [
        _row(1, "search", "k1", datetime(2024, 5, 2, tzinfo=timezone.utc), "0.000039891040000000001"),
        _row(2, "search", "k2", datetime(2024, 5, 3, tzinfo=timezone.utc), "1.5"),
        _row(3, "search", "k1", datetime(2024, 4, 30, 23, 59, tzinfo=timezone.utc), "100"),  # previous month
        _row(4, "ads", "k3", datetime(2024, 5, 3, tzinfo=timezone.utc), "7"),
        _row(5, "search", "k1", datetime(2024, 5, 4, tzinfo=timezone.utc), None),  # in flight: no cost yet
    ]
    async with engine.begin() as conn:
        await conn.execute(ledger.insert(), rows)
    assert await spend_since(engine, key_id="k1", since=may) == Decimal("0.000039891040000000001")
    assert await spend_since(engine, team="search", since=may) == Decimal("1.500039891040000000001")
    assert await spend_since(engine, team="nobody", since=may) == 0
    with pytest.raises(ValueError):
        await spend_since(engine, since=may)
