"""Settlements off the response path (gateway/limits/settler.py): batched, exact, exactly once, never lost."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.load import load_config_data
from gateway.decisions.limits import Budget, cost_units
from gateway.errors import RateLimited
from gateway.keys.identity import Identity
from gateway.limits.admission import Admission, MemoryGate, RedisGate
from gateway.limits.budgets import Budgets, MemoryCounters, Reservation
from gateway.limits.ratelimit import MemoryRateLimiter, RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.settler import MemorySettler, RedisSettler
from gateway.limits.wiring import build_limits
from gateway.state.connections import RedisConnections
from gateway.state.outbox import RedisOutbox
from tests.conftest import REDIS_URL
from tests.e2e.cutproxy import CutProxy
from tests.limits.test_budgets import Ledger

WHO = Identity(team="search", key_id="abcdef012345", key_budget=Budget(Decimal("1000"), "day"), tpm=100_000)
WORST = Decimal("0.01")


class Shared:
    """One replica's Redis admission and settler, counting the outbox's batches."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.counters, self.limiter = RedisCounters(redis, prefix), RedisRateLimiter(redis, prefix)
        self.budgets = Budgets(self.counters, Ledger())
        self.connections = RedisConnections(redis)
        self.admission = Admission(RedisGate(redis, self.limiter, self.counters, self.connections), self.budgets)
        self.outbox = RedisOutbox(self.connections)
        self.settler = RedisSettler(self.outbox, self.budgets, self.counters, self.limiter)
        self.batches: list[int] = []
        flush = self.outbox.flush

        async def counted(batch: list[Any]) -> None:
            self.batches.append(len(batch))
            await flush(batch)

        self.outbox.flush = counted  # type: ignore[method-assign]

    async def state(self) -> tuple[int, int]:
        """The key's counter, read straight from Redis (not through a proxy the test may have cut)."""
        counter = self.budgets.scopes(WHO)[0].counter
        check = aioredis.from_url(REDIS_URL)
        try:
            spent, reserved = await check.hmget(self.counters.hash_key(counter), "spent", "reserved")
        finally:
            await check.aclose()
        return int(spent), int(reserved)


@pytest.fixture
async def shared(redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> AsyncIterator[Shared]:
    s = Shared(two_redis[0], redis_prefix)
    yield s
    await s.connections.close()


async def test_concurrent_settlements_go_in_one_batch_and_land_exactly_once(shared: Shared) -> None:
    # Costs with all nine decimals of a unit and more: each rounds up to its own exact number of units.
    costs = [Decimal("0.001234567891") * (i + 1) for i in range(40)]
    reservations = await asyncio.gather(*(shared.admission.admit(WHO, f"r{i}", 100, WORST) for i in range(40)))
    assert shared.batches == []
    for r, cost in zip(reservations, costs):  # finishing together: one loop iteration
        shared.settler.settle(WHO, r, cost, 100, 100)
    await shared.settler.drain()
    assert shared.batches == [40]
    assert await shared.state() == (sum(cost_units(c) for c in costs), 0)
    for r, cost in zip(reservations, costs):  # settled again (a retry): the markers keep it to once
        shared.settler.settle(WHO, r, cost, 100, 100)
    await shared.settler.drain()
    assert await shared.state() == (sum(cost_units(c) for c in costs), 0)


async def test_tpm_corrections_ride_the_batch_and_count_the_tokens_used(shared: Shared) -> None:
    who = Identity(team="search", key_id="fedcba987654", tpm=1000)
    reservations = [await shared.admission.admit(who, f"t{i}", 100, None) for i in range(3)]
    for r in reservations:  # each used 300 tokens, not the 100 estimated
        shared.settler.settle(who, r, Decimal(0), 100, 300)
    await shared.settler.drain()
    assert shared.batches == [3]
    with pytest.raises(RateLimited):  # 1000 - 3 x 300 = 100 left: 150 more have to wait
        await shared.admission.admit(who, "next", 150, None)
    await shared.admission.admit(who, "small", 90, None)


async def test_while_redis_refuses_a_settlement_is_retried_until_it_lands(redis_prefix: str) -> None:
    with CutProxy("127.0.0.1", 6379) as proxy:
        redis = aioredis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_connect_timeout=0.5)
        s = Shared(redis, redis_prefix)  # refuse mode: no degrade wrappers, no local share to fall back on
        try:
            r = await s.admission.admit(WHO, "outage", None, WORST)
            proxy.cut()
            s.settler.settle(WHO, r, Decimal("0.003"), None, 0)
            await s.settler.drain()  # the batch fails: the settlement waits to retry
            assert s.outbox.pending == 1
            await s.settler.drain()  # retried at once by drain: still down
            assert s.outbox.pending == 1
            proxy.restore()
            await s.settler.drain()
            assert s.outbox.pending == 0
            assert await s.state() == (cost_units(Decimal("0.003")), 0)
        finally:
            await s.connections.close()
            await redis.aclose()


async def test_stopping_the_limits_flushes_settlements_still_queued(sqlite_engine: AsyncEngine,
                                                                    redis_prefix: str) -> None:
    config = load_config_data({
        "gateway": {"redis_url": REDIS_URL, "redis_prefix": redis_prefix, "on_shared_state_unavailable": "degrade"},
        "providers": {"p": {"api_base": "http://127.0.0.1:1/v1"}},
        "deployments": [{"provider": "p", "model": "m", "context_window": 1000, "quality": 50,
                         "price": {"input": "0.001", "output": "0.002"}}]}, "test.yaml", env={})
    redis = aioredis.from_url(REDIS_URL)
    limits = build_limits(config, sqlite_engine, redis, replica_id="settler-test")
    try:
        reservations = [await limits.admission.admit(WHO, f"s{i}", None, WORST) for i in range(5)]
        for r in reservations:
            limits.settler.settle(WHO, r, Decimal("0.002"), None, 0)
        assert limits.outbox is not None and limits.outbox.pending > 0  # nothing has been sent yet
        await limits.stop()  # the app's shutdown: the settlements land before the client closes
        counter = limits.budgets.scopes(WHO)[0].counter
        spent, reserved = await redis.hmget(f"{redis_prefix}budget:{counter}", "spent", "reserved")
        assert (int(spent), int(reserved)) == (5 * cost_units(Decimal("0.002")), 0)
    finally:
        await redis.aclose()


async def test_in_process_settlement_is_done_when_it_returns() -> None:
    counters, limiter = MemoryCounters(), MemoryRateLimiter()
    budgets = Budgets(counters, Ledger())
    admission, settler = Admission(MemoryGate(limiter, counters), budgets), MemorySettler(budgets, counters, limiter)
    r: Reservation = await admission.admit(WHO, "m1", 100, WORST)
    settler.settle(WHO, r, Decimal("0.004"), 100, 100)  # no await: nothing is left to wait for
    assert await budgets.spent(WHO, "key") == Decimal("0.004")
    settler.settle(WHO, r, Decimal("0.004"), 100, 100)
    assert await budgets.spent(WHO, "key") == Decimal("0.004")
