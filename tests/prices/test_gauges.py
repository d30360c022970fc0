"""The price gauges follow the version in force, including when a scheduled version's time arrives."""

from __future__ import annotations

from datetime import timedelta

from gateway.metrics import Metrics
from gateway.prices.changes import apply_update
from gateway.prices.gauges import PriceGaugeWatcher, update_price_gauges
from gateway.prices.store import PriceStore
from gateway.prices.book import version_from_config
from tests.prices.conftest import T0, Clock, make_config


def _price(m: Metrics, provider: str, model: str, direction: str, currency: str) -> float | None:
    return m.registry.get_sample_value("gateway_price_per_million_tokens",
                                       {"provider": provider, "model": model, "direction": direction,
                                        "currency": currency})


def test_prices_per_1k_are_shown_per_million_in_the_deployments_own_currency() -> None:
    config = make_config()
    m = Metrics()
    update_price_gauges(m, version_from_config(config), [d.to_deployment() for d in config.deployments])
    assert _price(m, "deepseek", "deepseek-v2", "input", "CNY") == 1.0  # 0.001 per 1K
    assert _price(m, "deepseek", "deepseek-v2", "cached_input", "CNY") == 0.1
    assert _price(m, "dashscope", "qwen-long", "cached_input", "CNY") == 20.0  # defaults to input
    assert _price(m, "openai", "gpt-4o", "output", "USD") == 10.0  # already per 1M
    assert m.registry.get_sample_value("gateway_price_table_version") == 1


def test_cache_write_price_is_shown_where_set_and_absent_elsewhere() -> None:
    config = make_config()
    m = Metrics()
    change = apply_update(version_from_config(config), {"prices": [
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "cache_write": "3.75", "cached_input": "0.3"}]},
        config, T0)
    update_price_gauges(m, change.version, [d.to_deployment() for d in config.deployments])
    assert _price(m, "anthropic", "claude-sonnet-4-5", "cache_write", "USD") == 3.75
    assert _price(m, "anthropic", "claude-sonnet-4-5", "cached_input", "USD") == 0.3
    assert _price(m, "deepseek", "deepseek-v2", "cache_write", "CNY") is None


async def test_gauges_change_when_a_scheduled_version_comes_into_force(sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    m = Metrics()
    watcher = PriceGaugeWatcher(m, lambda: store.book, [d.to_deployment() for d in config.deployments], clock=clock)
    await watcher.start()
    try:
        body = {"prices": [{"provider": "deepseek", "model": "deepseek-v2", "currency": "USD", "per": "1M",
                            "input": "0.27", "output": "1.1", "cached_input": "0.07"}]}
        await store.publish(lambda base, at: apply_update(base, body, config, at), T0 + timedelta(minutes=5),
                            source="test")
        assert not watcher.check()  # scheduled, not yet in force
        assert _price(m, "deepseek", "deepseek-v2", "input", "CNY") == 1.0
        clock.now = T0 + timedelta(minutes=5)
        assert watcher.check()
        assert m.registry.get_sample_value("gateway_price_table_version") == 2
        assert _price(m, "deepseek", "deepseek-v2", "input", "USD") == 0.27
        assert _price(m, "deepseek", "deepseek-v2", "input", "CNY") is None  # the stale currency series is gone
    finally:
        await watcher.stop()


async def test_a_published_version_shows_in_the_price_gauges_at_once_without_waiting_for_the_watch(
        sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    """The version gauge and the prices it stands for move together: a listener on the store, not the timer."""
    config = make_config()
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    m = Metrics()
    watcher = PriceGaugeWatcher(m, lambda: store.book, [d.to_deployment() for d in config.deployments],
                                clock=clock, interval_s=3600)  # the timer never fires during this test
    await watcher.start()
    store.add_listener(watcher.check)
    try:
        body = {"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": "0.0005"}]}
        await store.publish(lambda base, at: apply_update(base, body, config, at), None, source="test")
        assert m.registry.get_sample_value("gateway_price_table_version") == 2
        assert _price(m, "deepseek", "deepseek-v2", "input", "CNY") == 0.5
    finally:
        await watcher.stop()
