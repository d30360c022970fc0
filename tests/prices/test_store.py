"""Durable price versions: seeding, numbering, restarts, schedules taking effect on time, and replication."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from gateway.db import create_engine, upgrade
from gateway.decisions.pricing import price_usage
from gateway.decisions.routing import rank
from gateway.domain import RequestFacts, Usage
from gateway.prices.changes import apply_update
from gateway.prices.store import PriceStore
from tests.prices.conftest import T0, Clock, make_config

QWEN_CUT = {"prices": [{"provider": "dashscope", "model": "qwen-long", "input": "0.0005", "output": "0.002"}]}
FACTS = RequestFacts(model="auto", mode="chat", prompt_tokens=1000, requested_output_tokens=None,
                     expected_output_tokens=256)


def _update(body: dict[str, Any], config):  # type: ignore[no-untyped-def]
    return lambda base, at: apply_update(base, body, config, at)


async def test_an_empty_ledger_is_seeded_from_the_config_and_a_restart_keeps_every_version(
        sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    assert store.book.latest_number() == 1
    assert store.book.current(T0).prices[("dashscope", "qwen-long")].input == Decimal("0.02")
    published = await store.publish(_update(QWEN_CUT, config), None, source="test")
    assert [v.version for v in published.versions] == [2]
    unchanged = await store.publish(_update(QWEN_CUT, config), None, source="test")
    assert unchanged.versions == () and not unchanged.change.diff.has_changes  # nothing new, no version
    await store.stop()

    again = PriceStore(sqlite_engine, config, clock=clock)
    await again.start(follow=False)
    assert [v.version for v in again.book.versions()] == [1, 2]
    assert again.book.current(T0).prices[("dashscope", "qwen-long")].input == Decimal("0.0005")


async def test_deployments_added_to_the_config_get_their_config_price(sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    first = PriceStore(sqlite_engine, make_config(), clock=clock)
    await first.start(follow=False)
    bigger = make_config("""  - {provider: deepseek, model: deepseek-coder, context_window: 16K, quality: 70,
     price: {currency: CNY, per: 1K, input: 0.001, output: 0.002}}
""")
    second = PriceStore(sqlite_engine, bigger, clock=clock)
    await second.start(follow=False)
    assert second.book.latest_number() == 2
    assert second.book.current(T0).prices[("deepseek", "deepseek-coder")].input == Decimal("0.001")


async def test_a_scheduled_cut_prices_and_routes_by_the_version_in_force_when_each_request_starts(
        sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    pool = [d.to_deployment() for d in config.deployments]
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    at = T0 + timedelta(hours=1)
    published = await store.publish(_update(QWEN_CUT, config), at, source="test")
    scheduled = published.versions[0]
    assert scheduled.effective_from == at
    assert scheduled in store.book.versions()  # in the book at once, not in force yet

    before, after = at - timedelta(milliseconds=1), at + timedelta(milliseconds=1)
    old, new = store.book.current(before), store.book.current(after)
    assert (old.version, new.version) == (1, scheduled.version)

    usage = Usage(input_tokens=1000, cached_input_tokens=0, output_tokens=1000)
    key = ("dashscope", "qwen-long")
    assert price_usage(usage, old.prices[key], old, before).total == Decimal("0.04")
    cost = price_usage(usage, new.prices[key], new, after)
    assert cost.total == Decimal("0.0025") and cost.price_version == scheduled.version

    assert rank(FACTS, pool, old, before).candidates[0].deployment.model != "qwen-long"
    assert rank(FACTS, pool, new, after).candidates[0].deployment.model == "qwen-long"


async def test_a_change_made_now_is_carried_into_versions_already_scheduled(sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    at = T0 + timedelta(hours=1)
    await store.publish(_update(QWEN_CUT, config), at, source="test")
    now_change = {"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": "0.0009"}]}
    published = await store.publish(_update(now_change, config), None, source="test")
    assert [v.effective_from for v in published.versions] == [T0, at]
    later = store.book.current(at + timedelta(hours=1))
    assert later.prices[("deepseek", "deepseek-v2")].input == Decimal("0.0009")  # not undone by the schedule
    assert later.prices[("dashscope", "qwen-long")].input == Decimal("0.0005")


async def test_without_redis_another_process_on_the_same_ledger_follows_within_a_second(
        sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    a = PriceStore(sqlite_engine, config, clock=clock)
    b = PriceStore(sqlite_engine, config, clock=clock, poll_interval_s=0.2)
    await a.start(follow=False)
    await b.start()
    try:
        published = await a.publish(_update(QWEN_CUT, config), None, source="test")
        n = published.versions[0].version
        seen = await _wait_for(lambda: b.book.latest_number() == n)
        assert seen < 1.0
    finally:
        await b.stop()


async def _wait_for(cond: Any, limit: float = 3.0) -> float:
    t = time.perf_counter()
    while not cond():
        if time.perf_counter() - t > limit:
            raise AssertionError("not seen in time")
        await asyncio.sleep(0.005)
    return time.perf_counter() - t


async def test_two_replicas_on_redis_and_postgresql_see_each_others_versions_within_a_second(
        pg_url: str, redis_prefix: str) -> None:
    config = make_config()
    engines = [create_engine(pg_url, pool_size=2) for _ in range(2)]
    clients = [aioredis.from_url("redis://127.0.0.1:6379/0") for _ in range(2)]
    await upgrade(engines[0])
    a, b = (PriceStore(e, config, redis=r, prefix=redis_prefix) for e, r in zip(engines, clients))
    try:
        await asyncio.gather(a.start(), b.start())  # concurrent first start: one seeds, both load version 1
        assert a.book.latest_number() == b.book.latest_number() == 1
        await asyncio.wait_for(asyncio.gather(a.subscribed.wait(), b.subscribed.wait()), 5)

        published = await a.publish(_update(QWEN_CUT, config), None, source="test")
        n = published.versions[0].version
        seen = await _wait_for(lambda: b.book.latest_number() == n)
        print(f"\nversion {n} published on A, in B's book after {seen * 1000:.1f} ms")
        assert seen < 1.0
        assert b.book.get(n) == published.versions[0]

        # Both publish at once: numbers stay consecutive and unique, and each sees both.
        change_a = {"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": "0.0011"}]}
        change_b = {"prices": [{"provider": "openai", "model": "gpt-4o", "input": "2.4"}]}
        ra, rb = await asyncio.gather(a.publish(_update(change_a, config), None, source="a"),
                                      b.publish(_update(change_b, config), None, source="b"))
        numbers = sorted([ra.versions[0].version, rb.versions[0].version])
        assert numbers == [n + 1, n + 2]
        await _wait_for(lambda: a.book.latest_number() == b.book.latest_number() == n + 2)
        top = a.book.get(n + 2)
        assert top is not None  # the later one was built on the earlier one: neither change is lost
        assert top.prices[("deepseek", "deepseek-v2")].input == Decimal("0.0011")
        assert top.prices[("openai", "gpt-4o")].input == Decimal("2.4")

        # A replica that was not listening catches up from the version key when it (re)connects.
        c = PriceStore(engines[1], config, redis=clients[1], prefix=redis_prefix)
        await c.start(follow=False)
        await a.publish(_update({"prices": [], "fx_rates": {"USD": "7.2"}}, config), None, source="a")
        assert c.book.latest_number() == n + 2
        await c._catch_up()
        assert c.book.latest_number() == n + 3
    finally:
        await asyncio.gather(a.stop(), b.stop())
        for r in clients:
            await r.aclose()
        for e in engines:
            await e.dispose()


async def test_concurrent_publishes_on_one_ledger_lose_no_change(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engines = [create_engine(url) for _ in range(4)]
    await upgrade(engines[0])
    stores = [PriceStore(e, config) for e in engines]
    for s in stores:
        await s.start(follow=False)
    keys = [("deepseek", "deepseek-v2"), ("dashscope", "qwen-long"), ("openai", "gpt-4o"),
            ("volcengine", "doubao-pro-32k")]
    try:
        results = await asyncio.gather(*[
            s.publish(_update({"prices": [{"provider": p, "model": m, "input": "7.77"}]}, config), None, source="t")
            for s, (p, m) in zip(stores, keys)])
        assert sorted(r.versions[0].version for r in results) == [2, 3, 4, 5]
        await stores[0].refresh()
        top = stores[0].book.get(5)
        assert top is not None and all(top.prices[k].input == Decimal("7.77") for k in keys)
    finally:
        for e in engines:
            await e.dispose()


async def test_a_stored_cache_write_price_survives_a_restart_and_bills_cache_writes(
        sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    body = {"prices": [{"provider": "anthropic", "model": "claude-sonnet-4-5", "cached_input": "0.3",
                        "cache_write": "3.75"}]}
    await store.publish(_update(body, config), None, source="test")
    await store.stop()
    again = PriceStore(sqlite_engine, config, clock=clock)
    await again.start(follow=False)
    version = again.book.current(T0)
    price = version.prices[("anthropic", "claude-sonnet-4-5")]
    assert (price.cached_input, price.cache_write) == (Decimal("0.3"), Decimal("3.75"))
    cost = price_usage(Usage(100, 2_000, 10, cache_write_tokens=1_000), price, version, T0)
    assert (cost.input, cost.cached_input, cost.cache_write, cost.output) == (
        Decimal("0.0003"), Decimal("0.0006"), Decimal("0.00375"), Decimal("0.00015"))
    assert cost.total_reporting == Decimal("0.03408")  # 0.0048 USD x 7.10
    await again.stop()
