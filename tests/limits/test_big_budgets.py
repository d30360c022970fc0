"""Budgets of any size are exact, in process and on Redis (issue 15: above ~9 million per period they were
refused, because the Redis scripts compared units as Lua doubles)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.decisions.limits import Budget, cost_units
from gateway.errors import BudgetExceeded
from gateway.keys.identity import Identity
from gateway.limits.budgets import MemoryCounters
from gateway.limits.redis_budgets import _BIGINT, RedisCounters
from tests.conftest import REDIS_URL
from tests.limits.test_budgets import Ledger, budgets

# Twelve billion and one 1e-9: 12_000_000_000_000_000_001 units, past 2**63 as well as 2**53.
HUGE = Decimal("12000000000.000000001")
REQUEST = Decimal("0.5")

_ARITH = _BIGINT + "return {add(ARGV[1], ARGV[2]), sub(ARGV[1], ARGV[2]), cmp(ARGV[1], ARGV[2])}"


def _pair() -> Any:
    digits = st.one_of(st.integers(0, 10**16), st.integers(0, 10**40))
    return st.tuples(digits, digits)


@settings(max_examples=300, deadline=None)
@given(_pair())
def test_the_scripts_integer_arithmetic_is_exact_for_any_size(pair: tuple[int, int]) -> None:
    import redis

    a, b = pair
    client = redis.Redis.from_url(REDIS_URL)
    try:
        added, subtracted, compared = client.eval(_ARITH, 0, str(a), str(b))
    finally:
        client.close()
    assert int(added) == a + b
    assert int(subtracted) == max(a - b, 0)
    assert int(compared) == (a > b) - (a < b)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_budget_of_twelve_billion_admits_to_the_last_unit_and_not_one_more(backend: str,
                                                                                   redis_prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL) if backend == "redis" else None
    counters: Any = RedisCounters(client, redis_prefix) if client is not None else MemoryCounters()
    ledger = Ledger()
    already = HUGE - REQUEST * 2  # the ledger says all but two requests' worth is spent this period
    ledger.spend[("key", "abcdef012345")] = already
    b = budgets(counters, ledger)
    who = Identity(team="search", key_id="abcdef012345", key_budget=Budget(HUGE, "month"))
    try:
        first = await b.reserve(who, "r1", REQUEST)
        second = await b.reserve(who, "r2", REQUEST)  # exactly fills the budget: admitted
        with pytest.raises(BudgetExceeded):
            await b.reserve(who, "r3", Decimal("0.000000001"))  # one unit over
        await b.settle(first, REQUEST)
        await b.settle(second, REQUEST - Decimal("0.000000001"))  # one unit cheaper than reserved
        assert await b.spent(who, "key") == HUGE - Decimal("0.000000001")
        await b.settle(await b.reserve(who, "r4", Decimal("0.000000001")), Decimal("0.000000001"))
        assert await b.spent(who, "key") == HUGE
        assert cost_units(HUGE) == 12_000_000_000_000_000_001
    finally:
        if client is not None:
            await client.aclose()
