"""Fixtures of the shared-state tests: a Redis client on the test database (tests add their own key prefix)."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(REDIS_URL)
    yield c
    await c.aclose()
