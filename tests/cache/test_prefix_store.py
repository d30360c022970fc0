"""The prefix stores: in process and shared through Redis answer the same from memory; a shared store's changes
reach the other replicas (published, and loaded by a replica that starts later); Redis keys expire; a forgotten
prefix is gone; losing Redis never reaches the request path."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.cache.store import LocalPrefixStore, SharedPrefixStore

REDIS_URL = "redis://127.0.0.1:6379/0"
A, B = ("deepseek", "deepseek-v2"), ("dashscope", "qwen-long")
BIG = (1 << 70) + 12345  # prefix hashes are unreduced sums; stores reduce them mod 2^64
BIG_REDUCED = BIG & ((1 << 64) - 1)


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not replicated in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(REDIS_URL)
    yield c
    await c.aclose()


@pytest.fixture
async def shared(client: aioredis.Redis, redis_prefix: str) -> AsyncIterator[list[SharedPrefixStore]]:
    stores = [SharedPrefixStore(client, redis_prefix, replica_id=name) for name in ("one", "two")]
    for s in stores:
        await s.start()
        await asyncio.wait_for(s.listening.wait(), 5)
    yield stores
    for s in stores:
        await s.aclose()


async def test_local_and_shared_stores_find_what_was_remembered_per_position_and_deployment(
        shared: list[SharedPrefixStore]) -> None:
    for store in (LocalPrefixStore(), shared[0]):
        store.remember_now(A, [11, BIG], 100.5, 300, 10)
        store.remember_now(B, [11], 200.25, 600, 10)
        assert store.found_now([5, 11, BIG]) == {1: {A: 100.5, B: 200.25}, 2: {A: 100.5}}
        store.forget_now(A, [11])
        assert store.found_now([11, BIG]) == {0: {B: 200.25}, 1: {A: 100.5}}


async def test_what_one_replica_remembers_and_forgets_reaches_the_other(shared: list[SharedPrefixStore]) -> None:
    one, two = shared
    one.remember_now(A, [11, BIG], 100.5, 300, 10)
    await _until(lambda: two.found_now([11, BIG]) == {0: {A: 100.5}, 1: {A: 100.5}})
    one.forget_now(A, [11])
    await _until(lambda: two.found_now([11, BIG]) == {1: {A: 100.5}})


async def test_changes_of_concurrent_requests_go_out_as_one_pipeline(client: aioredis.Redis, redis_prefix: str,
                                                                     shared: list[SharedPrefixStore]) -> None:
    one, two = shared
    sent: list[int] = []
    real = one._send

    async def counting(batch: list[list[Any]]) -> None:
        sent.append(len(batch))
        await real(batch)

    one._send = counting  # type: ignore[method-assign]
    for i in range(20):  # twenty answers in the same loop pass
        one.remember_now(A, [1000 + i], 1.0 + i, 300, 100)
    await one.drain()
    assert sent == [20]
    await _until(lambda: len(two.found_now([1000 + i for i in range(20)])) == 20)


async def test_a_replica_that_starts_later_loads_what_was_sent_before(client: aioredis.Redis, redis_prefix: str,
                                                                      shared: list[SharedPrefixStore]) -> None:
    one, _ = shared
    one.remember_now(A, [7, BIG], 50.0, 300, 10)
    one.remember_now(B, [7], 60.0, 300, 10)
    await one.drain()
    late = SharedPrefixStore(client, redis_prefix, replica_id="late")
    await late.start()
    try:
        await asyncio.wait_for(late.listening.wait(), 5)
        assert late.found_now([7, BIG]) == {0: {A: 50.0, B: 60.0}, 1: {A: 50.0}}
    finally:
        await late.aclose()


async def test_redis_keys_expire_after_the_longest_ttl_written(client: aioredis.Redis, redis_prefix: str) -> None:
    store = SharedPrefixStore(client, redis_prefix)
    key = f"{redis_prefix}pc:{7:016x}"
    store.remember_now(A, [7], 1.0, 300, 10)
    await store.drain()
    assert 299 <= await client.ttl(key) <= 302
    store.remember_now(B, [7], 2.0, 60, 10)  # a shorter TTL never shortens the key's life
    await store.drain()
    assert await client.ttl(key) >= 299
    store.remember_now(B, [7], 3.0, 3600, 10)
    await store.drain()
    assert await client.ttl(key) > 3000
    assert await client.hgetall(key) == {b"deepseek\tdeepseek-v2": b"1.0", b"dashscope\tqwen-long": b"3.0"}
    await client.script_flush()  # as after a Redis restart: the script is loaded again, the write still lands
    store.remember_now(A, [BIG], 4.0, 300, 10)
    await store.drain()
    assert await client.hget(f"{redis_prefix}pc:{BIG_REDUCED:016x}", "deepseek\tdeepseek-v2") == b"4.0"


async def test_the_local_store_evicts_a_deployments_least_recently_sent_prefix() -> None:
    store = LocalPrefixStore()
    store.remember_now(A, [1, 2], 1.0, 300, 2)
    store.remember_now(A, [1], 2.0, 300, 2)  # 1 is fresh again
    store.remember_now(A, [3], 3.0, 300, 2)  # evicts 2
    assert store.found_now([1, 2, 3]) == {0: {A: 2.0}, 2: {A: 3.0}}
    assert store.entries(A) == 2


async def test_without_redis_the_shared_store_still_serves_its_own_memory_and_never_raises(caplog: Any) -> None:
    from gateway.cache.prefix import PrefixHasher
    from gateway.cache.service import PrefixCache
    from gateway.decisions.prefix_cache import CacheSettings
    from gateway.tokens import TokenCounter
    from tests.cache.test_prefix_model import conversation, dep, prices

    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # nothing listens there
    store = SharedPrefixStore(down, "x:")
    await store.start(ready_within_s=0.2)  # never ready: serves from memory after the bound
    try:
        cache = PrefixCache({("a", "m"): CacheSettings(ttl_s=300, min_tokens=0)}, PrefixHasher(TokenCounter()),
                            store)
        pool = [dep(("a", "m"))]
        first = await cache.lookup(conversation(2), pool, prices())
        assert first is not None and not first.warm
        cache.sent(pool[0], first, prices())
        await store.drain()  # the write failed (logged once); the memory kept it
        again = await cache.lookup(conversation(3), pool, prices())
        assert again is not None and again.warm[("a", "m")][0] > 0
        assert not store.listening.is_set()
        assert "not shared through Redis" in caplog.text
    finally:
        await store.aclose()
        await down.aclose()
