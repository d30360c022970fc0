"""The prefix stores: in process and on Redis answer the same, Redis keys expire, a forgotten prefix is gone."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from gateway.cache.store import LocalPrefixStore, RedisPrefixStore

REDIS_URL = "redis://127.0.0.1:6379/0"
A, B = ("deepseek", "deepseek-v2"), ("dashscope", "qwen-long")
BIG = (1 << 70) + 12345  # prefix hashes are unreduced sums; stores reduce them mod 2^64


@pytest.fixture
async def stores(redis_prefix: str) -> AsyncIterator[list[Any]]:
    client = aioredis.from_url(REDIS_URL)
    yield [LocalPrefixStore(), RedisPrefixStore(client, redis_prefix)]
    await client.aclose()


async def test_both_stores_find_what_was_remembered_per_position_and_deployment(stores: list[Any]) -> None:
    for store in stores:
        await store.remember(A, [11, BIG], 100.5, 300, 10)
        await store.remember(B, [11], 200.25, 600, 10)
        assert await store.found([5, 11, BIG]) == {1: {A: 100.5, B: 200.25}, 2: {A: 100.5}}
        await store.forget(A, [11])
        assert await store.found([11, BIG]) == {0: {B: 200.25}, 1: {A: 100.5}}


async def test_redis_keys_expire_after_the_longest_ttl_written(redis_prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        store = RedisPrefixStore(client, redis_prefix)
        await store.remember(A, [7], 1.0, 300, 10)
        key = f"{redis_prefix}pc:{7:016x}"
        assert 299 <= await client.ttl(key) <= 301
        await store.remember(B, [7], 2.0, 60, 10)  # a shorter TTL never shortens the key's life
        assert await client.ttl(key) >= 299
        await store.remember(B, [7], 3.0, 3600, 10)
        assert await client.ttl(key) > 3000
    finally:
        await client.aclose()


async def test_the_local_store_evicts_a_deployments_least_recently_sent_prefix() -> None:
    store = LocalPrefixStore()
    store.remember_now(A, [1, 2], 1.0, 2)
    store.remember_now(A, [1], 2.0, 2)  # 1 is fresh again
    store.remember_now(A, [3], 3.0, 2)  # evicts 2
    assert store.found_now([1, 2, 3]) == {0: {A: 2.0}, 2: {A: 3.0}}
    assert store.entries(A) == 2


async def test_a_failing_redis_lookup_ranks_at_list_prices_and_is_not_retried_at_once() -> None:
    from gateway.cache.prefix import PrefixHasher
    from gateway.cache.service import PrefixCache
    from gateway.decisions.prefix_cache import CacheSettings
    from gateway.tokens import TokenCounter
    from tests.cache.test_prefix_model import conversation, dep, prices

    class Down(Connection):  # nothing listens on port 1: every connection is refused, and counted
        calls = 0

        async def _connect(self) -> None:
            Down.calls += 1
            await super()._connect()

    cache = PrefixCache({("a", "m"): CacheSettings(ttl_s=300, min_tokens=0)}, PrefixHasher(TokenCounter()),
                        RedisPrefixStore(aioredis.Redis(connection_pool=aioredis.ConnectionPool(
                            port=1, connection_class=Down)), "x:"))
    pool = [dep(("a", "m"))]
    assert await cache.lookup(conversation(2), pool, prices()) is None
    assert await cache.lookup(conversation(3), pool, prices()) is None
    assert Down.calls == 1  # backed off: the second request did not wait on Redis
