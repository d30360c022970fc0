"""/v1/messages and chat through the demo's simulated DeepSeek Anthropic-format endpoint (written from the
Anthropic SDK's types, independently of the gateway's translators), billed to the digit from its usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest

from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows

D = Decimal
PRICE = {"input": D("0.001"), "cached_input": D("0.0001"), "output": D("0.002")}  # CNY per 1K; writes at input


def with_deepseek_anthropic(cache: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], None]:
    """The demo config plus the simulated DeepSeek Anthropic endpoint as deployment `ds-anthropic`."""
    def edit(data: dict[str, Any]) -> None:
        data["providers"]["deepseek-anthropic"] = {"api_base": "${DEMO_DEEPSEEK_ANTHROPIC_URL}",
                                                   "api_key": "demo-deepseek-key", "api_style": "anthropic",
                                                   **({"cache": cache} if cache is not None else {})}
        data["deployments"].append(
            {"provider": "deepseek-anthropic", "model": "ds-anthropic", "upstream_model": "deepseek-chat",
             "context_window": "32K", "max_output_tokens": 4096, "quality": 86, "capabilities": ["tools"],
             "price": {"currency": "CNY", "per": "1K", **PRICE}})

    return edit


@pytest.fixture()
def gw(fresh_vendors: Any) -> Iterator[GatewayThread]:
    with GatewayThread(demo_config(fresh_vendors, with_deepseek_anthropic())) as gateway:
        yield gateway


def cost(input_tokens: int, cached: int, written: int, output: int) -> Decimal:
    return (input_tokens * PRICE["input"] + cached * PRICE["cached_input"] + written * PRICE["input"]
            + output * PRICE["output"]) / 1000


def test_messages_pass_through_to_the_simulated_deepseek_anthropic_endpoint(gw):
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-app", max_retries=0)
    system = [{"type": "text", "text": "You are a careful assistant. " * 200, "cache_control": {"type": "ephemeral"}}]
    rows_costs, usages = [], []
    for _ in range(2):  # the second call reads what the first wrote to the vendor's cache
        raw = client.messages.with_raw_response.create(model="ds-anthropic", max_tokens=20, system=system,
                                                       messages=[{"role": "user", "content": "hello"}])
        m = raw.parse()
        u = m.usage
        usages.append(u)
        rows_costs.append(cost(u.input_tokens, u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0,
                               u.output_tokens))
        assert D(raw.headers["x-gateway-cost"]) == rows_costs[-1]
        assert m.type == "message" and m.content[0].type == "text"
    assert usages[0].cache_creation_input_tokens and usages[1].cache_read_input_tokens  # both directions billed
    rows = ledger_rows(gw, 2)
    assert [D(r["total_cost_reporting"]) for r in rows] == rows_costs
    assert all(r["provider"] == "deepseek-anthropic" and r["api"] == "messages" for r in rows)
    assert [r["cache_write_tokens"] for r in rows] == [u.cache_creation_input_tokens or 0 for u in usages]
    assert [r["cached_input_tokens"] for r in rows] == [u.cache_read_input_tokens or 0 for u in usages]


def test_messages_stream_pass_through_to_the_simulated_endpoint_is_billed_from_its_events(gw):
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-app", max_retries=0)
    with client.messages.stream(model="ds-anthropic", max_tokens=16,
                                messages=[{"role": "user", "content": "stream please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    u = final.usage
    [row] = ledger_rows(gw, 1)
    assert (row["status"], row["output_tokens"]) == ("success", u.output_tokens)
    assert D(row["total_cost_reporting"]) == cost(u.input_tokens, u.cache_read_input_tokens or 0,
                                                  u.cache_creation_input_tokens or 0, u.output_tokens)


def test_chat_translated_to_the_simulated_anthropic_endpoint(gw):
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-app", max_retries=0)
    completion = oai.chat.completions.create(model="ds-anthropic", max_tokens=16,
                                             messages=[{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content
    u = completion.usage
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    [row] = ledger_rows(gw, 1)
    assert row["input_tokens"] + row["cached_input_tokens"] <= u.prompt_tokens
    assert row["cached_input_tokens"] == cached and row["output_tokens"] == u.completion_tokens
    written = u.prompt_tokens - row["input_tokens"] - cached
    assert D(row["total_cost_reporting"]) == cost(row["input_tokens"], cached, written, u.completion_tokens)


@pytest.fixture()
def explicit_gw(fresh_vendors: Any) -> Iterator[GatewayThread]:
    """The simulated DeepSeek Anthropic endpoint configured as what it simulates: an explicit (cache_control)
    prompt cache."""
    edit = with_deepseek_anthropic({"mode": "explicit", "ttl_s": 300, "min_tokens": 1024})
    with GatewayThread(demo_config(fresh_vendors, edit)) as gateway:
        yield gateway


def test_messages_cache_control_predicts_the_explicit_write_then_the_hit(explicit_gw: GatewayThread) -> None:
    """The pass-through keeps cache_control for the vendor, and the gateway's prefix cache sees the marks too
    (the canonical chat body it hashes cannot carry them): turn 1 is predicted to write the marked system prompt,
    turn 2 to read it, and the prediction meets what the vendor reported."""
    import asyncio

    from gateway.dialects.messages import MESSAGES
    from gateway.accounting import utc_now

    gw = explicit_gw
    s = gw.services
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-app", max_retries=0)
    system = [{"type": "text", "text": "You are a careful assistant. " * 200, "cache_control": {"type": "ephemeral"}}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]

    def predicted() -> tuple[int, int]:
        """(cached, written) as the gateway's own lookup predicts them for the next request (its local store is
        idle between requests)."""
        parsed = MESSAGES.parse_body({"model": "ds-anthropic", "max_tokens": 20, "system": system,
                                      "messages": messages}, {}, s.tokens, 0)
        lookup = asyncio.run(s.prefix_cache.lookup(parsed.body, s.by_model["ds-anthropic"],
                                                   s.price_book.current(utc_now()), parsed.segments))
        assert lookup is not None
        return lookup.warm.get(("deepseek-anthropic", "ds-anthropic"), (0, 0))

    cached, written = predicted()
    assert cached == 0 and written >= 1024  # turn 1: the marked system prompt is written
    first = client.messages.with_raw_response.create(model="ds-anthropic", max_tokens=20, system=system,
                                                     messages=messages)
    assert first.headers["x-gateway-expected-cached-tokens"] == "0"
    assert first.parse().usage.cache_creation_input_tokens  # the vendor wrote it
    messages += [{"role": "assistant", "content": first.parse().content[0].text},  # type: ignore[union-attr]
                 {"role": "user", "content": "and again?"}]
    cached, written = predicted()
    assert cached > 0 and written == 0  # turn 2: the same prefix is read, nothing written
    second = client.messages.with_raw_response.create(model="ds-anthropic", max_tokens=20, system=system,
                                                      messages=messages)
    assert second.headers["x-gateway-expected-cached-tokens"] == str(cached)
    read = second.parse().usage.cache_read_input_tokens or 0
    assert read > 0
    hit = s.metrics.registry.get_sample_value("gateway_cache_predicted_tokens_total",
                                              {"provider": "deepseek-anthropic", "model": "ds-anthropic",
                                               "outcome": "hit"})
    assert hit == min(cached, read)
