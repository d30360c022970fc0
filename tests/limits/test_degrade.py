"""Budgets, rate limits and provider health while Redis is unreachable (degrade mode), with real Redis behind a
proxy the test cuts: replicas keep serving on conservative local shares, never overspend together, and reconcile
exactly once when Redis returns."""

from __future__ import annotations

import asyncio
import functools
from decimal import Decimal
from typing import Any, AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from gateway.decisions.limits import Budget, cost_units, units_to_money
from gateway.errors import BudgetExceeded, RateLimited
from gateway.keys.identity import Identity
from gateway.limits.admission import Admission, DegradingGate, RedisGate
from gateway.limits.budgets import Budgets, Scope
from gateway.limits.degrade import DegradingCounters, DegradingRateLimiter
from gateway.limits.shared_state import SharedState
from gateway.limits.ratelimit import RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.settler import RedisSettler
from gateway.state.connections import RedisConnections
from gateway.state.outbox import RedisOutbox
from gateway.state.base import CooldownPolicy
from gateway.state.redis_health import RedisHealth
from tests.e2e.cutproxy import CutProxy

BUDGET = Decimal("1.00")
WORST = Decimal("0.05")
ACTUAL = Decimal("0.03")
WHO = Identity(team="search", key_id="abcdef012345", key_budget=Budget(BUDGET, "day"))


async def spend_from_ledger(kind: str, name: str, since: Any) -> Decimal:
    return Decimal(0)


class Replica:
    def __init__(self, port: int, prefix: str, name: str) -> None:
        self.redis = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
        self.state = SharedState(self.redis, prefix, name, deadline_s=0.3, probe_s=0.1)
        shared_counters, shared_limiter = RedisCounters(self.redis, prefix), RedisRateLimiter(self.redis, prefix)
        self.counters = DegradingCounters(shared_counters, self.state)
        self.budgets = Budgets(self.counters, spend_from_ledger)
        self.limiter = DegradingRateLimiter(shared_limiter, self.state)
        # As gateway/limits/wiring.py builds them: the path's calls give up at the shared state's deadline.
        self.connections = RedisConnections(self.redis, deadline_s=self.state.deadline_s)
        gate = RedisGate(self.redis, shared_limiter, shared_counters, self.connections)
        self.admission = Admission(DegradingGate(gate, self.limiter, self.counters, self.state), self.budgets)
        guard = functools.partial(self.state.call, bounded=True)
        self.settler = RedisSettler(RedisOutbox(self.connections, guard=guard), self.budgets,
                                    shared_counters, shared_limiter, local_counters=self.counters,
                                    local_limiter=self.limiter)

    async def close(self) -> None:
        await self.settler.drain()
        await self.state.stop()
        await self.connections.close()
        await self.redis.aclose()


@pytest.fixture
def redis_proxy() -> Iterator[CutProxy]:
    with CutProxy("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.fixture
async def replicas(redis_proxy: CutProxy, redis_prefix: str) -> AsyncIterator[list[Replica]]:
    reps = [Replica(redis_proxy.port, redis_prefix, f"rep-{i}") for i in range(2)]
    for r in reps:
        await r.state.start()
    for r in reps:  # each has seen both registered
        await r.state._presence()
    yield reps
    for r in reps:
        await r.close()


async def wait_for(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def spend(replica: Replica, request_id: str) -> bool:
    try:
        reservation = await replica.budgets.reserve(WHO, request_id, WORST)
    except BudgetExceeded:
        return False
    await replica.budgets.settle(reservation, ACTUAL)
    return True


async def test_replicas_spend_only_their_share_while_redis_is_down_and_reconcile_exactly_once(
        replicas: list[Replica], redis_proxy: CutProxy, redis_prefix: str) -> None:
    a, b = replicas
    assert a.state.replicas_alive == 2 and b.state.replicas_alive == 2
    for i in range(5):  # 0.15 spent through Redis, each replica having seen the counter
        assert await spend((a, b)[i % 2], f"before-{i}")
    running = await a.budgets.reserve(WHO, "spans-the-outage", WORST)  # reserved in Redis, settles during
    redis_proxy.cut()
    served = {"a": 0, "b": 0}
    for i in range(40):
        for name, rep in (("a", a), ("b", b)):
            served[name] += await spend(rep, f"during-{name}-{i}")
    assert a.state.degraded and b.state.degraded
    await a.budgets.settle(running, ACTUAL)
    # Each had (1.00 - 0.20) / 2 = 0.40 to itself: 0.40 / 0.05 worst cases, each settling at 0.03 ...
    assert served["a"] > 0 and served["b"] > 0
    spent_during = (served["a"] + served["b"]) * ACTUAL + ACTUAL
    assert 5 * ACTUAL + spent_during <= BUDGET  # never more than the budget together
    redis_proxy.restore()
    await wait_for(lambda: not a.state.degraded and not b.state.degraded)
    counter = a.budgets.scopes(WHO)[0].counter
    check = aioredis.from_url("redis://127.0.0.1:6379/0")
    try:
        units = int(await check.hget(f"{redis_prefix}budget:{counter}", "spent"))
        reserved = int(await check.hget(f"{redis_prefix}budget:{counter}", "reserved"))
        await a.counters.reconcile()  # again: changes nothing (settle markers)
        assert int(await check.hget(f"{redis_prefix}budget:{counter}", "spent")) == units
    finally:
        await check.aclose()
    assert units == cost_units(ACTUAL) * (5 + 1 + served["a"] + served["b"])  # every spend added exactly once
    assert reserved == 0 and units_to_money(units) <= BUDGET
    assert await spend(a, "after")  # shared counters again


async def test_a_redis_that_stops_answering_degrades_admission_within_the_deadline(
        replicas: list[Replica], redis_proxy: CutProxy) -> None:
    a, _ = replicas
    who = WHO  # a budget (local rate limits start empty while Redis is down: a refusal would prove less)
    loop = asyncio.get_running_loop()

    async def admitted_within(request_id: str) -> float:
        started = loop.time()
        reservation = await asyncio.wait_for(a.admission.admit(who, request_id, None, WORST), 5)
        assert reservation.units > 0  # reserved, on the local share
        return loop.time() - started

    await a.admission.admit(who, "connected", None, WORST)  # the path's connection is open
    redis_proxy.hang()  # bytes stop flowing; the connection stays open
    assert await admitted_within("while-hung") < 1.5  # the 0.3 s deadline, not redis-py's 5 s
    assert a.state.degraded
    await a.connections.close()  # the next call opens a connection: accepted, then its handshake never answers
    a.state.degraded = False
    assert await admitted_within("new-connection-hung") < 1.5
    assert a.state.degraded
    redis_proxy.restore()


async def test_a_request_still_running_when_redis_returns_holds_its_reservation_there(
        replicas: list[Replica], redis_proxy: CutProxy, redis_prefix: str) -> None:
    a, _ = replicas
    assert await spend(a, "seen")
    redis_proxy.cut()
    running = await a.budgets.reserve(WHO, "long-stream", WORST)
    assert a.state.degraded
    redis_proxy.restore()
    await wait_for(lambda: not a.state.degraded)
    counter = a.budgets.scopes(WHO)[0].counter
    check = aioredis.from_url("redis://127.0.0.1:6379/0")
    try:
        key = f"{redis_prefix}budget:{counter}"
        assert int(await check.hget(key, "reserved")) == cost_units(WORST)  # the others see it running
        await a.budgets.settle(running, ACTUAL)
        assert int(await check.hget(key, "reserved")) == 0
        assert int(await check.hget(key, "spent")) == 2 * cost_units(ACTUAL)
    finally:
        await check.aclose()


async def test_rate_limits_divide_among_replicas_and_start_empty_while_redis_is_down(
        replicas: list[Replica], redis_proxy: CutProxy) -> None:
    a, b = replicas
    key = Identity(team="search", key_id="ratekey00001", rpm=6000)
    await a.limiter.check(key, 10)  # through Redis
    redis_proxy.cut()
    with pytest.raises(RateLimited):  # the first degraded check: an empty local bucket
        await a.limiter.check(key, 10)
    await asyncio.sleep(0.5)  # 3000/min each = 50/s: about 25 tokens refilled on each replica
    admitted = 0
    for _ in range(200):
        for rep in (a, b):
            try:
                await rep.limiter.check(key, 10)
                admitted += 1
            except RateLimited:
                pass
    assert 0 < admitted <= 2 * 3000 * 0.6 / 60 + 2  # never above the key's own rate across both
    redis_proxy.restore()
    await wait_for(lambda: not a.state.degraded)
    await a.limiter.check(key, 10)


async def test_refuse_mode_raises_as_before(redis_proxy: CutProxy, redis_prefix: str) -> None:
    redis = aioredis.from_url(f"redis://127.0.0.1:{redis_proxy.port}/0", socket_connect_timeout=0.5)
    budgets = Budgets(RedisCounters(redis, redis_prefix), spend_from_ledger)
    try:
        redis_proxy.cut()
        with pytest.raises(Exception) as raised:
            await budgets.reserve(WHO, "r", WORST)
        assert not isinstance(raised.value, BudgetExceeded)  # the pipeline turns this into 503 state_unavailable
    finally:
        await redis.aclose()


async def test_provider_health_continues_from_the_last_known_state_and_counts_failures_locally(
        redis_proxy: CutProxy, redis_prefix: str) -> None:
    redis = aioredis.from_url(f"redis://127.0.0.1:{redis_proxy.port}/0", socket_connect_timeout=0.5)
    health = RedisHealth(redis, {"p1": CooldownPolicy(2, 30.0), "p2": CooldownPolicy(2, 30.0)},
                         prefix=redis_prefix, deadline_s=0.3)
    try:
        await health.record_failure("p1", rate_limited=True)  # cooled down through Redis
        await health.refresh()
        assert health.cooling() == {"p1"}
        redis_proxy.cut()
        for _ in range(2):
            await health.record_failure("p2", rate_limited=False)  # no exception: counted here
        assert health.cooling() == {"p1", "p2"}
        redis_proxy.restore()
        await health.refresh()
        assert health.cooling() == {"p1", "p2"}  # the local cool-down outlives Redis's view
    finally:
        await redis.aclose()


async def test_a_replica_keeps_its_local_share_until_every_peer_has_reconciled(redis_prefix: str) -> None:
    with CutProxy("127.0.0.1", 6379) as to_a, CutProxy("127.0.0.1", 6379) as to_b:
        a, b = Replica(to_a.port, redis_prefix, "rep-a"), Replica(to_b.port, redis_prefix, "rep-b")
        try:
            for r in (a, b):
                await r.state.start()
            await wait_for(lambda: a.state._peers == {"rep-a", "rep-b"} == b.state._peers)
            assert await spend(a, "seen-a") and await spend(b, "seen-b")
            to_a.cut()
            to_b.cut()
            await wait_for(lambda: a.state.degraded and b.state.degraded)
            assert await spend(b, "b-during")  # b spends on its share, unknown to Redis
            to_a.restore()  # only a reaches Redis again
            await asyncio.sleep(1.0)  # ten probes
            assert a.state.degraded  # b has not reconciled: a stays on its share
            to_b.restore()
            await wait_for(lambda: not a.state.degraded and not b.state.degraded)
            counter = a.budgets.scopes(WHO)[0].counter
            check = aioredis.from_url("redis://127.0.0.1:6379/0")
            try:
                spent = int(await check.hget(f"{redis_prefix}budget:{counter}", "spent"))
            finally:
                await check.aclose()
            assert spent == 3 * cost_units(ACTUAL)
        finally:
            await a.close()
            await b.close()


async def test_the_share_keeps_back_what_peers_may_have_spent_since_the_last_reading() -> None:
    from datetime import datetime, timezone

    state = SharedState(None, "p:", "me", probe_s=0.1)
    state.replicas_alive = 2
    counters = DegradingCounters.__new__(DegradingCounters)
    DegradingCounters.__init__(counters, RedisCounters.__new__(RedisCounters), state)
    now = [100.0]
    counters._clock = lambda: now[0]  # type: ignore[method-assign]
    counters._observe("c", 400)
    now[0] = 101.0
    counters._observe("c", 500)  # growing 100 units/s
    now[0] = 101.5  # Redis went away half a second after the last reading
    scope = Scope("key", "k", "c", 1000, 60, datetime.now(timezone.utc))
    share = counters._share(scope)
    assert share is not None and share.share == (1000 - 500 - int(100 * (0.5 + 0.1))) // 2


async def counter_state(prefix: str, counter: str) -> tuple[int, int]:
    check = aioredis.from_url("redis://127.0.0.1:6379/0")
    try:
        spent, reserved = await check.hmget(f"{prefix}budget:{counter}", "spent", "reserved")
        return int(spent or 0), int(reserved or 0)
    finally:
        await check.aclose()


async def test_admission_on_the_local_shares_charges_both_or_neither(replicas: list[Replica],
                                                                     redis_proxy: CutProxy) -> None:
    a, _ = replicas
    who = Identity(team="search", key_id="abcdef012345", key_budget=Budget(BUDGET, "day"), rpm=6000)
    await a.admission.admit(who, "seen", 1, WORST)  # through Redis: the counter's total is known
    redis_proxy.cut()
    with pytest.raises(RateLimited):  # the local bucket starts empty: no share of the budget is taken
        await a.admission.admit(who, "first-local", 1, WORST)
    assert a.state.degraded
    counter = a.budgets.scopes(who)[0].counter
    assert counter not in a.counters._shares and "first-local" not in a.counters._local
    await asyncio.sleep(0.1)  # 3000/min each: about 5 requests refilled
    for i in range(20):  # bigger than the share: refused, and no local rpm taken either
        with pytest.raises(BudgetExceeded):
            await a.admission.admit(who, f"too-big-{i}", 1, BUDGET)
    for i in range(3):
        await a.admission.admit(who, f"local-{i}", 1, WORST)
    assert a.counters._shares[counter].used == 3 * cost_units(WORST)


async def test_a_settlement_queued_while_redis_goes_down_is_settled_locally_and_reconciled(
        replicas: list[Replica], redis_proxy: CutProxy, redis_prefix: str) -> None:
    a, _ = replicas
    admitted = [await a.admission.admit(WHO, f"before-{i}", None, WORST) for i in range(3)]
    counter = a.budgets.scopes(WHO)[0].counter
    redis_proxy.cut()
    for r in admitted:  # queued: their batch meets the cut connection
        a.settler.settle(WHO, r, ACTUAL, None, 0)
    await a.settler.drain()
    assert a.state.degraded
    assert [s.request_id for s in a.counters._settled] == [r.request_id for r in admitted]  # settled locally
    redis_proxy.restore()
    await wait_for(lambda: not a.state.degraded)
    assert await counter_state(redis_prefix, counter) == (3 * cost_units(ACTUAL), 0)  # reconciled, exactly once
    await a.counters.reconcile()
    for r in admitted:  # and a late duplicate changes nothing: the settle markers
        a.settler.settle(WHO, r, ACTUAL, None, 0)
    await a.settler.drain()
    assert await counter_state(redis_prefix, counter) == (3 * cost_units(ACTUAL), 0)
