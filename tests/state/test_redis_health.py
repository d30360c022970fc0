"""Provider cool-downs shared through Redis: a vendor failing on one replica is avoided by all."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from gateway.state.base import CooldownPolicy
from gateway.state.redis_health import RedisHealth

POLICIES = {"deepseek": CooldownPolicy(3, 30.0), "zhipu": CooldownPolicy(2, 0.3)}


async def _until(cond, timeout: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        assert loop.time() - t0 < timeout, "not seen in time"
        await asyncio.sleep(0.01)
    return loop.time() - t0


async def test_failures_on_one_replica_cool_the_provider_on_all(
        redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    a, b = (RedisHealth(r, POLICIES, prefix=redis_prefix, poll_s=0.5) for r in two_redis)
    await a.start()
    await b.start()
    try:
        await a.record_failure("deepseek", rate_limited=False)
        await b.record_failure("deepseek", rate_limited=False)  # consecutive across replicas
        assert a.cooling() == frozenset() and b.cooling() == frozenset()
        await b.record_failure("deepseek", rate_limited=False)
        assert b.cooling() == {"deepseek"}  # at once where it happened
        assert await _until(lambda: a.cooling() == {"deepseek"}) < 0.3  # pub/sub, not the poll
    finally:
        await a.stop()
        await b.stop()


async def test_rate_limited_cools_at_once_and_expires(redis_prefix: str,
                                                      two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    a, b = (RedisHealth(r, POLICIES, prefix=redis_prefix, poll_s=0.1) for r in two_redis)
    await a.start()
    await b.start()
    try:
        await a.record_failure("zhipu", rate_limited=True)
        await _until(lambda: b.cooling() == {"zhipu"})
        await _until(lambda: a.cooling() == frozenset() and b.cooling() == frozenset())  # 0.3 s cool-down
    finally:
        await a.stop()
        await b.stop()


async def test_success_anywhere_resets_the_failure_count(redis_prefix: str,
                                                         two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    a, b = (RedisHealth(r, POLICIES, prefix=redis_prefix, poll_s=0.5) for r in two_redis)
    await a.start()
    await b.start()
    try:
        await a.record_failure("deepseek", rate_limited=False)
        await a.record_failure("deepseek", rate_limited=False)
        await _until(lambda: "deepseek" in b._maybe_failing)
        await b.record_success(("deepseek", "deepseek-v2"), 0.5)
        await a.record_failure("deepseek", rate_limited=False)
        assert a.cooling() == frozenset()
        assert b.latencies() == {("deepseek", "deepseek-v2"): 0.5}
    finally:
        await a.stop()
        await b.stop()


async def test_a_replica_starting_later_sees_current_cooldowns(
        redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    a = RedisHealth(two_redis[0], POLICIES, prefix=redis_prefix)
    await a.record_failure("deepseek", rate_limited=True)
    b = RedisHealth(two_redis[1], POLICIES, prefix=redis_prefix)
    await b.start()
    try:
        assert b.cooling() == {"deepseek"}
    finally:
        await b.stop()
