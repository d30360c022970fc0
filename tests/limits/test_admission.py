"""Admission (gateway/limits/admission.py): rate limits and the budget reservation decided together. The Redis
script admits and refuses exactly as the in-process implementation does, a refusal by either side charges the
other nothing, and the seed protocol and exact decimal arithmetic hold through the combined script."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.decisions.limits import Budget, cost_units
from gateway.errors import BudgetExceeded, RateLimited
from gateway.keys.identity import Identity
from gateway.limits.admission import Admission, MemoryGate, RedisGate
from gateway.limits.budgets import Budgets, MemoryCounters
from gateway.limits.ratelimit import MemoryRateLimiter, RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from tests.limits.test_budgets import NOW, Ledger


@dataclass
class Backend:
    admission: Admission
    counters: Any  # MemoryCounters or RedisCounters: to read spent/reserved
    ledger: Ledger

    async def state(self, who: Identity) -> tuple[int, int] | None:
        """(spent, reserved) of the key's counter, None when it does not exist."""
        counter = self.admission.budgets.scopes(who)[0].counter
        if isinstance(self.counters, MemoryCounters):
            c = self.counters._get(counter, self.counters._clock())
            return None if c is None else (c.spent, c.reserved)
        h = await self.counters.redis.hmget(self.counters.hash_key(counter), "spent", "reserved")
        return None if h[0] is None else (int(h[0]), int(h[1]))


def backend(kind: str, redis: aioredis.Redis, prefix: str) -> Backend:
    ledger = Ledger()
    if kind == "memory":
        counters: Any = MemoryCounters()
        gate: Any = MemoryGate(MemoryRateLimiter(), counters)
    else:
        counters = RedisCounters(redis, prefix)
        gate = RedisGate(redis, RedisRateLimiter(redis, prefix), counters)
    budgets = Budgets(counters, ledger, timezone_name="Asia/Shanghai", clock=lambda: NOW)
    return Backend(Admission(gate, budgets), counters, ledger)


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def key(rpm: int | None = None, tpm: int | None = None, budget: str | None = None,
        team_budget: str | None = None) -> Identity:
    return Identity(team="search", key_id="abcdef012345", rpm=rpm, tpm=tpm,
                    key_budget=Budget(Decimal(budget), "month") if budget is not None else None,
                    team_budget=Budget(Decimal(team_budget), "day") if team_budget is not None else None)


async def outcome(b: Backend, who: Identity, rid: str, tokens: int | None, worst: str | None) -> str:
    try:
        await b.admission.admit(who, rid, tokens, Decimal(worst) if worst is not None else None)
    except RateLimited as e:
        return f"rate_limited:{e.retry_after}"
    except BudgetExceeded as e:
        return f"budget_exceeded:{'team' if 'team' in e.message else 'key'}"
    return "ok"


# Each case: a caller and a sequence of (tokens, worst case) asks; the outcomes are the in-process ones, and the
# Redis script must give the same (Retry-After included: the buckets refill far slower than a test runs).
CASES: list[tuple[str, Identity, list[tuple[int | None, str | None]], list[str]]] = [
    ("rpm only", key(rpm=2), [(10, None)] * 3, ["ok", "ok", "rate_limited:30"]),
    ("tpm only", key(tpm=1000), [(600, None), (600, None), (300, None)], ["ok", "rate_limited:12", "ok"]),
    ("a prompt above tpm waits for a full bucket", key(tpm=100), [(500, None), (1, None)],
     ["ok", "rate_limited:1"]),
    ("budget only", key(budget="1"), [(None, "0.4"), (None, "0.4"), (None, "0.3"), (None, "0.2")],
     ["ok", "ok", "budget_exceeded:key", "ok"]),
    ("budget, rpm and tpm", key(rpm=3, tpm=1000, budget="1"),
     [(100, "0.6"), (100, "0.6"), (100, "0.3"), (100, "0.1"), (100, "0")],
     ["ok", "budget_exceeded:key", "ok", "ok", "rate_limited:20"]),
    ("the rate limit is checked first", key(rpm=1, budget="0.1"), [(1, "0.1"), (1, "5")],
     ["ok", "rate_limited:60"]),
    ("team budget", key(budget="10", team_budget="0.5"), [(None, "0.3"), (None, "0.3")],
     ["ok", "budget_exceeded:team"]),
    ("a free request fits a spent budget", key(rpm=5, budget="0"), [(1, "0"), (1, "0.000000001")],
     ["ok", "budget_exceeded:key"]),
]


@pytest.mark.parametrize("name,who,asks,expected", CASES, ids=[c[0] for c in CASES])
async def test_the_combined_admission_admits_and_refuses_as_the_in_process_one(
        name: str, who: Identity, asks: list[tuple[int | None, str | None]], expected: list[str], redis_prefix: str,
        two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    for kind in ("memory", "redis"):
        b = backend(kind, two_redis[0], redis_prefix + kind + ":")
        got = [await outcome(b, who, f"req-{i}", tokens, worst) for i, (tokens, worst) in enumerate(asks)]
        assert got == expected, kind


async def test_a_rate_limit_refusal_reserves_no_budget(kind: str, redis_prefix: str,
                                                       two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    b = backend(kind, two_redis[0], redis_prefix)
    who = key(rpm=1, budget="1")
    await b.admission.admit(who, "first", 10, Decimal("0.25"))
    with pytest.raises(RateLimited):
        await b.admission.admit(who, "second", 10, Decimal("0.25"))
    assert await b.state(who) == (0, cost_units(Decimal("0.25")))  # only the admitted request holds budget


async def test_a_budget_refusal_takes_no_rate_limit_tokens(kind: str, redis_prefix: str,
                                                           two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    b = backend(kind, two_redis[0], redis_prefix)
    who = key(rpm=2, tpm=1000, budget="1")
    await b.admission.admit(who, "fits", 600, Decimal("0.6"))
    for i in range(3):  # refused by the budget, again and again: neither rpm nor tpm is spent on them
        with pytest.raises(BudgetExceeded):
            await b.admission.admit(who, f"too-big-{i}", 400, Decimal("0.5"))
    await b.admission.admit(who, "second", 400, Decimal("0.4"))  # the minute's second request, and its last 400 tokens
    with pytest.raises(RateLimited):
        await b.admission.admit(who, "third", 1, Decimal("0"))


async def test_counters_are_seeded_from_the_ledger_and_the_rate_limit_charged_once(
        kind: str, redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    b = backend(kind, two_redis[0], redis_prefix)
    b.ledger.spend[("key", "abcdef012345")] = Decimal("0.7")
    who = key(rpm=1, budget="1")
    with pytest.raises(BudgetExceeded):  # seeded at 0.7 on the way: 0.31 does not fit
        await b.admission.admit(who, "r1", 5, Decimal("0.31"))
    await b.admission.admit(who, "r2", 5, Decimal("0.3"))  # the seeding round trip charged no request
    assert len(b.ledger.calls) == 1
    with pytest.raises(RateLimited):
        await b.admission.admit(who, "r3", 5, Decimal("0"))
    assert await b.state(who) == (cost_units(Decimal("0.7")), cost_units(Decimal("0.3")))


async def test_readmitting_the_same_request_charges_nothing_twice(
        kind: str, redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    b = backend(kind, two_redis[0], redis_prefix)
    who = key(rpm=2, budget="1")
    await b.admission.admit(who, "same", 1, Decimal("0.6"))
    await b.admission.admit(who, "same", 1, Decimal("0.6"))  # a retry of the same request id: already held
    await b.admission.admit(who, "other", 1, Decimal("0.4"))
    assert await b.state(who) == (0, cost_units(Decimal("1")))


async def test_budgets_of_any_size_are_exact_through_the_combined_script(
        redis_prefix: str, two_redis: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    huge = Decimal("12000000000.000000001")  # 12e18 + 1 units: past 2**53 and 2**63
    b = backend("redis", two_redis[0], redis_prefix)
    who = key(rpm=10, budget=str(huge))
    b.ledger.spend[("key", "abcdef012345")] = huge - Decimal("1.5")
    await b.admission.admit(who, "fits", 1, Decimal("1.5"))
    with pytest.raises(BudgetExceeded):
        await b.admission.admit(who, "one-unit-more", 1, Decimal("0.000000001"))
    assert await b.state(who) == (cost_units(huge - Decimal("1.5")), cost_units(Decimal("1.5")))


async def test_callers_without_limits_or_budgets_need_no_admission() -> None:
    assert not Admission.rate_limited(Identity(team="t", key_id="abcdef012345"))
    assert not Admission.budgeted(Identity(team="t", key_id="abcdef012345"))
    assert Admission.rate_limited(key(tpm=5)) and Admission.budgeted(key(team_budget="1"))
    b = backend("memory", None, "")  # type: ignore[arg-type]
    who = key(rpm=1)
    reservation = await b.admission.admit(who, "r", 5, None)  # a rate limit alone: nothing to reserve
    assert reservation.counters == ()
