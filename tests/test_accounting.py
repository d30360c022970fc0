"""Closing the books: the ledger row names the request's API, and cache writes reach the row, the cost, the
baseline and the metrics, exactly."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal

from gateway.accounting import RequestBooks
from gateway.config.load import load_config_data, parse_yaml_text
from gateway.domain import Usage
from gateway.ledger.base import MemoryLedger
from gateway.metrics import Metrics
from gateway.prices.book import PriceBook, version_from_config
from gateway.services import Identity, Services
from gateway.tokens import TokenCounter

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
CONFIG = """
gateway: {reporting_currency: CNY}
fx_rates: {USD: 7.10}
providers:
  anthropic: {api_base: "http://127.0.0.1:1"}
  openai: {api_base: "http://127.0.0.1:1/v1"}
deployments:
  - {provider: anthropic, model: claude-sonnet-4-5, context_window: 200K, quality: 94,
     price: {currency: USD, per: 1M, input: 3, output: 15, cached_input: 0.3, cache_write: 3.75}}
  - {provider: openai, model: gpt-4o, context_window: 128K, quality: 95,
     price: {currency: USD, per: 1M, input: 2.5, output: 10, cached_input: 1.25}}
savings_baseline: {provider: openai, model: gpt-4o}
"""


def services() -> Services:
    config = load_config_data(parse_yaml_text(CONFIG), "test.yaml", env={})
    return Services(config=config, deployments=[d.to_deployment() for d in config.deployments],
                    price_book=PriceBook([version_from_config(config)]), health=None,  # type: ignore[arg-type]
                    ledger=MemoryLedger(), metrics=Metrics(), providers={}, tokens=TokenCounter(), replica_id="r1")


def books(s: Services, request_id: str, **kwargs: object) -> RequestBooks:
    return RequestBooks(s, request_id, Identity(team="agents"), "auto", T0, time.perf_counter(),
                        s.price_book.current(T0), 3_100, False, **kwargs)  # type: ignore[arg-type]


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, {"provider": "anthropic", "model": "claude-sonnet-4-5", "team": "agents",
                                              **labels})


async def test_the_row_names_the_api_and_keeps_the_cache_writes_priced_exactly() -> None:
    s = services()
    d = s.deployments[0]
    b = books(s, "req-1", api="messages")
    await b.open(d)
    assert s.ledger.rows["req-1"].api == "messages"  # type: ignore[attr-defined]
    usage = Usage(100, 2_000, 50, cache_write_tokens=1_000)
    cost = await b.close(d, "success", "success", usage=usage)
    row = s.ledger.rows["req-1"]  # type: ignore[attr-defined]
    assert (row.api, row.status, row.usage) == ("messages", "success", usage)
    assert cost is not None and row.cost == cost
    assert (cost.cache_write, cost.cache_write_reporting, cost.total_reporting) == (
        Decimal("0.00375"), Decimal("0.026625"), Decimal("0.03834"))
    # The baseline prices the same four directions at gpt-4o (cache writes at its input price, 2.5):
    # (100 x 2.5 + 2,000 x 1.25 + 1,000 x 2.5 + 50 x 10) / 1M = 0.00575 USD = 0.040825 CNY.
    assert row.baseline_cost == Decimal("0.040825")


async def test_metrics_count_cache_write_tokens_and_cost_and_the_savings_include_them() -> None:
    s = services()
    d = s.deployments[0]
    b = books(s, "req-1", api="responses")
    await b.open(d)
    await b.close(d, "success", "success", usage=Usage(100, 2_000, 50, cache_write_tokens=1_000))
    m = s.metrics
    assert sample(m, "gateway_tokens_total", direction="cache_write") == 1_000
    assert sample(m, "gateway_tokens_total", direction="input") == 100
    assert sample(m, "gateway_tokens_total", direction="cached_input") == 2_000
    assert sample(m, "gateway_cost_total", direction="cache_write", currency="CNY") == float(Decimal("0.026625"))
    assert m.registry.get_sample_value("gateway_savings_total", {"team": "agents", "currency": "CNY"}) == float(
        Decimal("0.040825") - Decimal("0.03834"))


async def test_without_an_api_a_request_is_a_chat_completion_and_no_cache_write_series_appears() -> None:
    s = services()
    d = s.deployments[0]
    b = books(s, "req-2")
    await b.open(d)
    await b.close(d, "success", "success", usage=Usage(10, 0, 1))
    assert s.ledger.rows["req-2"].api == "chat"  # type: ignore[attr-defined]
    assert sample(s.metrics, "gateway_tokens_total", direction="input") == 10
    assert sample(s.metrics, "gateway_tokens_total", direction="cache_write") is None


def test_a_budgets_worst_case_prices_the_prompt_at_cache_write_where_writing_costs_more() -> None:
    from gateway.decisions.pricing import unit_prices
    from gateway.decisions.routing import Candidate
    from gateway.domain import RequestFacts
    from gateway.pipeline import Pipeline

    s = services()
    prices = s.price_book.current(T0)
    facts = RequestFacts(model="auto", mode="chat", prompt_tokens=1_000, requested_output_tokens=500,
                         expected_output_tokens=500)
    sonnet, gpt = (Candidate(d, Decimal(0), unit_prices(prices.prices[d.key], 1_000, T0), None)
                   for d in s.deployments)
    worst = Pipeline(s)._worst_case
    # Sonnet may write the whole prompt to its cache: (1,000 x 3.75 + 500 x 15) / 1M USD x 7.10.
    assert worst(facts, (sonnet,), prices) == Decimal("0.079875")
    assert worst(facts, (gpt,), prices) == Decimal("0.05325")  # no dearer cache write: the input price
