"""Budgets hold under concurrency, in process and across replicas sharing Redis (contract section 4)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.decisions.limits import Budget, cost_units
from gateway.errors import BudgetExceeded
from gateway.keys.identity import Identity
from gateway.limits.budgets import Budgets, MemoryCounters, Reservation
from gateway.limits.redis_budgets import RedisCounters

NOW = datetime(2024, 5, 20, 12, 0, tzinfo=timezone.utc)
WORST = Decimal("0.0123456789")  # more decimals than a unit: rounded up when reserved
ACTUAL = Decimal("0.0098765432101")


class Ledger:
    """A stand-in for the ledger's spend query: records what was asked, answers from a dict."""

    def __init__(self) -> None:
        self.spend: dict[tuple[str, str], Decimal] = {}
        self.calls: list[tuple[str, str, datetime]] = []

    async def __call__(self, kind: str, name: str, since: datetime) -> Decimal:
        self.calls.append((kind, name, since))
        return self.spend.get((kind, name), Decimal(0))


def identity(key_budget: Decimal | None = None, team_budget: Decimal | None = None) -> Identity:
    return Identity(team="search", key_id="abcdef012345",
                    key_budget=Budget(key_budget, "month") if key_budget is not None else None,
                    team_budget=Budget(team_budget, "day") if team_budget is not None else None)


def budgets(counters: Any, ledger: Ledger, **kw: Any) -> Budgets:
    return Budgets(counters, ledger, timezone_name="Asia/Shanghai", clock=lambda: NOW, **kw)


async def _race(front_ends: list[Budgets], who: Identity, n: int) -> list[Reservation]:
    async def one(i: int) -> Reservation | None:
        try:
            return await front_ends[i % len(front_ends)].reserve(who, f"req-{i}", WORST)
        except BudgetExceeded:
            return None

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return [r for r in results if r is not None]


async def test_in_process_200_concurrent_against_50_worst_cases() -> None:
    ledger = Ledger()
    b = budgets(MemoryCounters(), ledger)
    who = identity(key_budget=WORST * 50)
    admitted = await _race([b], who, 200)
    # floor(limit) / ceil(worst) units: this worst case has sub-unit digits, so 50 x ceil(worst) is a few units
    # over the budget and the 50th is refused. Rounding can refuse a hair early, never let one more in.
    assert len(admitted) == 49
    assert len(admitted) * WORST <= WORST * 50
    await asyncio.gather(*(b.settle(r, ACTUAL) for r in admitted))
    assert await b.spent(who, "key") <= WORST * 50


async def test_redis_200_concurrent_from_two_replicas(redis_prefix: str,
                                                      two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    ledger = Ledger()
    a, b = (budgets(RedisCounters(r, redis_prefix), ledger) for r in two_redis)
    who = identity(key_budget=Decimal(50) * WORST, team_budget=Decimal(1000))
    admitted = await _race([a, b], who, 200)
    assert len(admitted) == 49
    assert len(admitted) * cost_units(WORST) <= cost_units(WORST) * 50
    await asyncio.gather(*(x.settle(r, WORST) for x, r in zip([a, b] * 100, admitted)))
    spent = await a.spent(who, "key")
    assert spent is not None and spent <= Decimal(50) * WORST
    # Nothing is left reserved: a further request is refused only because the money is spent.
    with pytest.raises(BudgetExceeded):
        await b.reserve(who, "one-more", WORST)


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest, redis_prefix: str,
                   two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> Any:
    return MemoryCounters() if request.param == "memory" else RedisCounters(two_redis[0], redis_prefix)


async def test_settle_is_idempotent(counters: Any) -> None:
    b = budgets(counters, Ledger())
    who = identity(key_budget=Decimal(1), team_budget=Decimal(1))
    r = await b.reserve(who, "req-1", Decimal("0.5"))
    for _ in range(3):
        await b.settle(r, Decimal("0.2"))
    assert await b.spent(who, "key") == Decimal("0.2")
    assert await b.spent(who, "team") == Decimal("0.2")
    # The 0.5 hold was released exactly once: 0.8 still fits, 0.81 does not.
    with pytest.raises(BudgetExceeded):
        await b.reserve(who, "req-2", Decimal("0.81"))
    await b.reserve(who, "req-3", Decimal("0.8"))


async def test_key_and_team_are_reserved_together_or_not_at_all(counters: Any) -> None:
    b = budgets(counters, Ledger())
    who = identity(key_budget=Decimal(10), team_budget=Decimal(1))
    await b.reserve(who, "req-1", Decimal("0.6"))
    with pytest.raises(BudgetExceeded, match="team 'search'"):
        await b.reserve(who, "req-2", Decimal("0.6"))
    # The refused request left the key's counter untouched: 9.4 still fits there.
    other_team = Identity(team="other", key_id=who.key_id, key_budget=who.key_budget)
    await b.reserve(other_team, "req-3", Decimal("9.4"))


async def test_reserving_the_same_request_twice_holds_once(counters: Any) -> None:
    b = budgets(counters, Ledger())
    who = identity(key_budget=Decimal(1))
    await b.reserve(who, "req-1", Decimal("0.6"))
    await b.reserve(who, "req-1", Decimal("0.6"))  # a retry of the same request id
    await b.reserve(who, "req-2", Decimal("0.4"))


async def test_free_requests_and_no_budget(counters: Any) -> None:
    b = budgets(counters, Ledger())
    assert (await b.reserve(Identity(team="default"), "r", Decimal(5))).counters == ()
    who = identity(key_budget=Decimal(0))
    r = await b.reserve(who, "free", Decimal(0))  # a free model fits even a zero budget
    await b.settle(r, Decimal(0))
    with pytest.raises(BudgetExceeded):
        await b.reserve(who, "paid", Decimal("0.000000001"))


async def test_counters_reseeded_from_ledger_in_process() -> None:
    ledger = Ledger()
    ledger.spend[("key", "abcdef012345")] = Decimal("0.7")
    b = budgets(MemoryCounters(), ledger)
    who = identity(key_budget=Decimal(1))
    with pytest.raises(BudgetExceeded):
        await b.reserve(who, "req-1", Decimal("0.31"))
    await b.reserve(who, "req-2", Decimal("0.3"))
    # Seeded once, from the start of the month in the reporting zone (Asia/Shanghai: UTC+8).
    assert ledger.calls == [("key", "abcdef012345", datetime(2024, 4, 30, 16, 0, tzinfo=timezone.utc))]


async def test_counters_reseeded_from_ledger_when_redis_loses_them(
        redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    ledger = Ledger()
    b = budgets(RedisCounters(two_redis[0], redis_prefix), ledger)
    who = identity(key_budget=Decimal(1), team_budget=Decimal(5))
    r = await b.reserve(who, "req-1", Decimal("0.5"))
    await b.settle(r, Decimal("0.4"))
    assert len(ledger.calls) == 2  # key and team seeded at first use (a new period)
    # Redis loses everything; the ledger has billed that request (and one more from another replica).
    keys = [k async for k in two_redis[0].scan_iter(match=redis_prefix + "budget:*")]
    assert keys
    await two_redis[0].delete(*keys)
    ledger.spend[("key", "abcdef012345")] = Decimal("0.9")
    ledger.spend[("team", "search")] = Decimal("0.9")
    with pytest.raises(BudgetExceeded):
        await b.reserve(who, "req-2", Decimal("0.2"))
    await b.reserve(who, "req-3", Decimal("0.1"))
    assert len(ledger.calls) == 4
    assert await b.spent(who, "key") == Decimal("0.9")


async def test_unsettled_holds_are_released_after_hold_time(redis_prefix: str,
                                                            two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    who = identity(key_budget=Decimal(1))
    t = [0.0]
    mem = budgets(MemoryCounters(clock=lambda: t[0]), Ledger(), hold_s=10)
    red = budgets(RedisCounters(two_redis[0], redis_prefix), Ledger(), hold_s=0.2)
    for b in (mem, red):
        await b.reserve(who, "dies", Decimal(1))  # its process dies: never settled
        with pytest.raises(BudgetExceeded):
            await b.reserve(who, "next", Decimal("0.5"))
    t[0] = 11.0
    await asyncio.sleep(0.3)
    for b in (mem, red):
        r = await b.reserve(who, "next", Decimal("0.5"))
        await b.settle(r, Decimal("0.5"))
        assert await b.spent(who, "key") == Decimal("0.5")


async def test_settle_after_period_change_charges_the_starting_period(counters: Any) -> None:
    now = [NOW]
    b = Budgets(counters, Ledger(), timezone_name="UTC", clock=lambda: now[0])
    who = Identity(team="t", key_id="abcdef012345", key_budget=Budget(Decimal(1), "day"))
    r = await b.reserve(who, "late", Decimal("0.5"))
    now[0] = datetime(2024, 5, 21, 0, 0, 1, tzinfo=timezone.utc)
    await b.settle(r, Decimal("0.5"))
    assert await b.spent(who, "key") == Decimal(0)  # the new day starts empty
    now[0] = NOW
    assert await b.spent(who, "key") == Decimal("0.5")


async def test_budget_metrics_per_team(counters: Any) -> None:
    from gateway.metrics import Metrics

    m = Metrics()
    b = budgets(counters, Ledger(), metrics=m, currency="CNY")
    who = identity(team_budget=Decimal(3))
    r = await b.reserve(who, "req", Decimal(1))
    await b.settle(r, Decimal("0.25"))
    assert m.registry.get_sample_value("gateway_budget_limit", {"team": "search", "currency": "CNY"}) == 3.0
    assert m.registry.get_sample_value("gateway_budget_spent", {"team": "search", "currency": "CNY"}) == 0.25
