"""Per-key rpm / tpm limits: 429 with Retry-After, shared across replicas through Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway.errors import RateLimited
from gateway.keys.identity import Identity
from gateway.limits.ratelimit import MemoryRateLimiter, RedisRateLimiter

KEY = Identity(team="t", key_id="abcdef012345", rpm=3)


async def test_rpm_in_process_with_retry_after() -> None:
    t = [100.0]
    rl = MemoryRateLimiter(clock=lambda: t[0])
    for _ in range(3):
        await rl.check(KEY, 10)
    with pytest.raises(RateLimited) as e:
        await rl.check(KEY, 10)
    assert e.value.retry_after == 20  # one request refills every 60/3 s
    assert e.value.code == "rate_limit_exceeded"
    t[0] += 20
    await rl.check(KEY, 10)


async def test_rpm_shared_by_two_replicas(redis_prefix: str,
                                          two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    a, b = (RedisRateLimiter(r, redis_prefix) for r in two_redis)
    await a.check(KEY, 10)
    await b.check(KEY, 10)
    await a.check(KEY, 10)
    with pytest.raises(RateLimited) as e:
        await b.check(KEY, 10)
    assert 19 <= e.value.retry_after <= 20


async def test_rpm_holds_under_concurrency_on_redis(redis_prefix: str,
                                                    two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    limiters = [RedisRateLimiter(r, redis_prefix) for r in two_redis]
    who = Identity(team="t", key_id="abcdef012345", rpm=20)

    async def one(i: int) -> bool:
        try:
            await limiters[i % 2].check(who, 1)
            return True
        except RateLimited:
            return False

    assert sum(await asyncio.gather(*(one(i) for i in range(100)))) == 20


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_tpm_refuses_without_charging_rpm(backend: str, redis_prefix: str,
                                                two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    rl = MemoryRateLimiter() if backend == "memory" else RedisRateLimiter(two_redis[0], redis_prefix)
    who = Identity(team="t", key_id="abcdef012345", rpm=2, tpm=1000)
    await rl.check(who, 900)
    with pytest.raises(RateLimited) as e:
        await rl.check(who, 200)  # 100 tokens left; 100 more take 6 s to refill at 1000/min
    assert 6 <= e.value.retry_after <= 7
    await rl.check(who, 50)  # the refused request did not use up the second request of the minute


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_adjust_charges_actual_tokens(backend: str, redis_prefix: str,
                                            two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    rl = MemoryRateLimiter() if backend == "memory" else RedisRateLimiter(two_redis[0], redis_prefix)
    who = Identity(team="t", key_id="abcdef012345", tpm=1000)
    await rl.check(who, 100)
    await rl.adjust(who, 100, 1000)  # it really used 1000: the bucket is now empty
    with pytest.raises(RateLimited):
        await rl.check(who, 50)


async def test_no_key_or_no_limits_is_never_limited() -> None:
    rl = MemoryRateLimiter()
    for _ in range(100):
        await rl.check(Identity(team="default"), 10**6)
        await rl.check(Identity(team="t", key_id="abcdef012345"), 10**6)
