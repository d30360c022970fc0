"""Ledger fixtures: the same tests on SQLite and PostgreSQL (a fresh database each, dropped afterwards)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade
from gateway.ledger.tables import cost_columns, ledger

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


async def _pg_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not await _pg_reachable():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    name = f"gw_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def engine(ledger_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(ledger_url, pool_size=4)
    await upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def direct(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """The test module's PostgreSQL database (tests/conftest.py `pg_url`), migrated, its ledger emptied."""
    eng = create_engine(pg_url, pool_size=2)
    await upgrade(eng)
    async with eng.begin() as conn:
        await conn.execute(ledger.delete())
    yield eng
    await eng.dispose()


def row(request_id: str, started_at: datetime = T0, *, team: str = "t1", key_id: str | None = "k1",
        route: str = "auto", provider: str = "volcengine", model: str = "doubao-pro-32k", price_version: int = 1,
        tokens: tuple[int, ...] = (0, 0, 0), costs: tuple[str, ...] | None = None,
        baseline: str | None = None, currency: str = "CNY", status: str = "success",
        replica_id: str = "r1", api: str = "chat", **extra: Any) -> dict[str, Any]:
    """A complete ledger row; `tokens` are (input, cached_input, output[, cache_write]) and `costs` the same
    directions' reporting-currency amounts (and, with fx 1, the deployment's)."""
    from gateway.domain import Cost, UnitPrices

    cost = None
    if costs is not None:
        inp, cached, out, *written = (Decimal(c) for c in costs)
        cost = Cost(currency, inp, cached, out, reporting_currency=currency, fx_rate=Decimal(1),
                    price_version=price_version, unit_prices=UnitPrices(currency, 1000, *(Decimal(0),) * 3),
                    cache_write=written[0] if written else Decimal(0))
    cache_write_tokens = tokens[3] if len(tokens) > 3 else 0
    values = {
        "request_id": request_id, "started_at": started_at, "finished_at": started_at, "replica_id": replica_id,
        "team": team, "key_id": key_id, "route": route, "provider": provider, "model": model,
        "upstream_model": model, "price_version": price_version, "stream": False,
        "prompt_tokens_estimate": tokens[0] + tokens[1] + cache_write_tokens, "input_tokens": tokens[0],
        "cached_input_tokens": tokens[1], "output_tokens": tokens[2], "cache_write_tokens": cache_write_tokens,
        "usage_source": "provider", "api": api,
        "status": status, "attempts": 1, "latency_ms": 10, "ttft_ms": None, "error_kind": None,
        **cost_columns(cost, None if baseline is None else Decimal(baseline)),
    }
    values.update(extra)
    return values


async def insert_rows(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        for i in range(0, len(rows), 20_000):
            await conn.execute(ledger.insert(), rows[i:i + 20_000])
