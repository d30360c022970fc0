"""Fixtures shared by every test package: a migrated SQLite ledger, a PostgreSQL database per test module,
and Redis clients with a key prefix of the test's own (deleted afterwards)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from typing import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade

# Property-based tests keep no example database on disk (a `.hypothesis` directory in the repository), and no
# per-example deadline: the machine is shared, and a slow example is not a failure.
settings.register_profile("gateway", database=None, deadline=None)
settings.load_profile("gateway")
# Its caches (the Unicode character map takes seconds to build) in one place per machine, out of the work tree.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "gateway-hypothesis"))

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _pg(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database of this test module's own, dropped afterwards."""
    stem = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20]
    name = f"t_{stem}_{uuid.uuid4().hex[:10]}"
    _pg(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def two_redis() -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    """Two independent clients (own connection pools): two replicas."""
    a, b = aioredis.from_url(REDIS_URL), aioredis.from_url(REDIS_URL)
    yield a, b
    await a.aclose()
    await b.aclose()
