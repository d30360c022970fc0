"""Fixtures for budget and rate-limit tests: Redis clients with a key prefix of the test's own."""

from __future__ import annotations

import uuid
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"test:limits:{uuid.uuid4().hex[:10]}:"
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
