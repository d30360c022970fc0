"""/v1/messages and chat through the demo's simulated DeepSeek Anthropic-format endpoint (written from the
Anthropic SDK's types, independently of the gateway's translators), billed to the digit from its usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator

import anthropic
import openai
import pytest

from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows

D = Decimal
PRICE = {"input": D("0.001"), "cached_input": D("0.0001"), "output": D("0.002")}  # CNY per 1K; writes at input


@pytest.fixture()
def gw(fresh_vendors: Any) -> Iterator[GatewayThread]:
    def edit(data: dict[str, Any]) -> None:
        data["providers"]["deepseek-anthropic"] = {"api_base": "${DEMO_DEEPSEEK_ANTHROPIC_URL}",
                                                   "api_key": "demo-deepseek-key", "api_style": "anthropic"}
        data["deployments"].append(
            {"provider": "deepseek-anthropic", "model": "ds-anthropic", "upstream_model": "deepseek-chat",
             "context_window": "32K", "max_output_tokens": 4096, "quality": 86, "capabilities": ["tools"],
             "price": {"currency": "CNY", "per": "1K", **PRICE}})

    with GatewayThread(demo_config(fresh_vendors, edit)) as gateway:
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
