"""The gateway through the real Anthropic SDK (and the OpenAI SDK against an Anthropic-format vendor), on loopback:
a real gateway server, the simulated OpenAI-format vendors and a loopback Anthropic-format vendor. Every request
is billed exactly: costs asserted to the digit, prompt-cache reads and writes included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator

import anthropic
import openai
import pytest

from gateway.dialects.anthropic import messages_to_chat
from gateway.tokens import TokenCounter
from tests.e2e.anthropic_vendor import TEXT, USAGE, AnthropicVendorThread
from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows

D = Decimal
FX = D("7.10")
# The anthropic-style deployment's price: USD per 1M (Anthropic's: cache reads 0.1x, 5-minute writes 1.25x input).
ANTHRO = {"input": D("3"), "cached_input": D("0.3"), "cache_write": D("3.75"), "output": D("15")}
VENDOR_KEY = "vendor-anthropic-key"
# 21 x 3 + 128 x 0.3 + 64 x 3.75 + 9 x 15 = 476.4 USD per 1M tokens -> 0.0004764 USD x 7.10 = 0.00338244 CNY
NATIVE_COST = D("0.00338244")
CACHE_WRITE_COST = D("0.001704")  # 64 x 3.75 / 1M x 7.10


@pytest.fixture(scope="module")
def anthro_vendor() -> Iterator[AnthropicVendorThread]:
    with AnthropicVendorThread() as vendor:
        yield vendor


@pytest.fixture()
def anthro(anthro_vendor: AnthropicVendorThread) -> AnthropicVendorThread:
    anthro_vendor.state.reset()
    return anthro_vendor


@pytest.fixture()
def gw(fresh_vendors: Any, anthro: AnthropicVendorThread) -> Iterator[GatewayThread]:
    def edit(data: dict[str, Any]) -> None:
        data["providers"]["anthro"] = {"api_base": anthro.url, "api_key": VENDOR_KEY, "api_style": "anthropic",
                                       "timeout_s": 10}
        data["deployments"] += [
            {"provider": "anthro", "model": "claude-sonnet", "upstream_model": "claude-sonnet-4-5",
             "context_window": "200K", "max_output_tokens": 8192, "quality": 90,
             "capabilities": ["tools", "json_mode", "vision"],
             "price": {"currency": "USD", "per": "1M", "input": D("3"), "output": D("15"),
                       "cached_input": D("0.3"), "cache_write": D("3.75")}},
            # The same name at an OpenAI-format vendor, dearer: the fallback for the anthropic-style one.
            {"provider": "deepseek", "model": "claude-sonnet", "upstream_model": "deepseek-chat",
             "context_window": "32K", "max_output_tokens": 4096, "quality": 86, "capabilities": ["tools", "json_mode"],
             "price": {"currency": "CNY", "per": "1K", "input": D("1"), "output": D("2")}},
        ]

    with GatewayThread(demo_config(fresh_vendors, edit)) as gateway:
        yield gateway


@pytest.fixture()
def client(gw: GatewayThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-client-own-key", max_retries=0)


def deepseek_cost(input_tokens: int, output_tokens: int, per_1k_in: str, per_1k_out: str) -> Decimal:
    return (input_tokens * D(per_1k_in) + output_tokens * D(per_1k_out)) / 1000


def only_row(gw: GatewayThread) -> dict[str, Any]:
    rows = ledger_rows(gw, 1)
    assert len(rows) == 1, rows
    return rows[0]


def assert_native_row(row: dict[str, Any], output_tokens: int = USAGE["output_tokens"], api: str = "messages") -> None:
    assert (row["provider"], row["upstream_model"], row["api"]) == ("anthro", "claude-sonnet-4-5", api)
    assert (row["input_tokens"], row["cached_input_tokens"], row["cache_write_tokens"], row["output_tokens"]) == \
        (21, 128, 64, output_tokens)
    assert D(row["cache_write_cost_reporting"]) == CACHE_WRITE_COST
    assert row["usage_source"] == "provider"


# ---- pass-through -----------------------------------------------------------------------------------------------

def test_messages_create_reaches_an_anthropic_deployment_unchanged_and_is_billed_with_cache_tokens(client, gw, anthro):
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
        extra_body={"top_k": 5, "gateway": {"min_quality": 80}})
    message = raw.parse()
    assert message.content[0].text == TEXT and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens,
            message.usage.output_tokens) == (21, 128, 64, 9)
    sent = anthro.state.bodies[-1]
    assert sent == {"model": "claude-sonnet-4-5", "max_tokens": 2000, "top_k": 5,
                    "thinking": {"type": "enabled", "budget_tokens": 1024},
                    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                               "cache_control": {"type": "ephemeral"}}]}]}
    headers = anthro.state.headers[-1]
    assert headers["x-api-key"] == VENDOR_KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert raw.headers["x-gateway-provider"] == "anthro" and raw.headers["x-gateway-cost"] == str(NATIVE_COST)
    row = only_row(gw)
    assert_native_row(row)
    assert D(row["total_cost_reporting"]) == NATIVE_COST and row["status"] == "success"


def test_messages_stream_passes_the_vendor_events_through_and_bills_them(client, gw, anthro):
    with client.messages.stream(model="claude-sonnet", max_tokens=100,
                                messages=[{"role": "user", "content": "stream please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens,
            final.usage.output_tokens) == (21, 128, 64, 9)
    assert anthro.state.bodies[-1]["stream"] is True
    row = only_row(gw)
    assert_native_row(row)
    assert row["stream"] and row["status"] == "success" and D(row["total_cost_reporting"]) == NATIVE_COST


def test_tool_round_trip_through_an_anthropic_deployment(client, gw, anthro):
    tools = [{"name": "get_weather", "description": "Weather of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    first = client.messages.create(model="claude-sonnet", max_tokens=200, tools=tools,
                                   messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    second = client.messages.create(
        model="claude-sonnet", max_tokens=200, tools=tools,
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}])
    assert second.content[0].text == "The tool said: sunny"
    rows = ledger_rows(gw, 2)
    assert [D(r["total_cost_reporting"]) for r in rows] == [NATIVE_COST, NATIVE_COST]


# ---- translated: Messages client, OpenAI-format vendor -------------------------------------------------------------

def test_messages_create_translated_for_an_openai_format_deployment(client, gw, fresh_vendors):
    raw = client.messages.with_raw_response.create(
        model="deepseek-v2", max_tokens=16, system="be brief", stop_sequences=["END"],
        messages=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                  {"role": "user", "content": [{"type": "text", "text": "more"}]}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    sent = fresh_vendors.stats("deepseek")["last_body"]
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
                                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    assert sent["model"] == "deepseek-chat" and sent["stop"] == ["END"] and sent["max_tokens"] == 16
    row = only_row(gw)
    assert row["api"] == "messages"
    assert (row["input_tokens"], row["output_tokens"]) == (message.usage.input_tokens, message.usage.output_tokens)
    expected = deepseek_cost(message.usage.input_tokens, message.usage.output_tokens, "0.001", "0.002")
    assert D(row["total_cost_reporting"]) == expected == D(raw.headers["x-gateway-cost"])


def test_messages_stream_translated_from_an_openai_format_vendor(client, gw, fresh_vendors):
    with client.messages.stream(model="deepseek-v2", max_tokens=12,
                                messages=[{"role": "user", "content": "stream please"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.content[0].text and final.usage.output_tokens == 12
    row = only_row(gw)
    assert row["stream"] and row["status"] == "success" and row["output_tokens"] == 12
    assert row["input_tokens"] == final.usage.input_tokens
    assert D(row["total_cost_reporting"]) == deepseek_cost(row["input_tokens"], 12, "0.001", "0.002")


def test_tool_result_turn_translated_for_an_openai_format_deployment(client, fresh_vendors):
    client.messages.create(
        model="deepseek-v2", max_tokens=20,
        tools=[{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
        messages=[{"role": "user", "content": "call f"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}]}])
    sent = fresh_vendors.stats("deepseek")["last_body"]
    assert sent["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                            "properties": {}}}}]
    assert sent["messages"][1]["tool_calls"] == [{"id": "t1", "type": "function",
                                                  "function": {"name": "f", "arguments": '{"a":1}'}}]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "done"}


# ---- translated: chat client, Anthropic-format vendor --------------------------------------------------------------

def test_chat_completion_translated_for_an_anthropic_deployment_bills_cache_tokens(gw, anthro):
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-openai-app", max_retries=0)
    raw = oai.chat.completions.with_raw_response.create(
        model="claude-sonnet", max_tokens=50,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == TEXT
    assert completion.usage.prompt_tokens == 21 + 128 + 64
    assert completion.usage.prompt_tokens_details.cached_tokens == 128
    assert anthro.state.bodies[-1] == {"model": "claude-sonnet-4-5", "max_tokens": 50, "system": "be brief",
                                       "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert raw.headers["x-gateway-cost"] == str(NATIVE_COST)
    row = only_row(gw)
    assert_native_row(row, api="chat")
    assert D(row["total_cost_reporting"]) == NATIVE_COST


def test_chat_stream_translated_from_an_anthropic_vendor_has_the_final_usage(gw, anthro):
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-openai-app", max_retries=0)
    chunks = list(oai.chat.completions.create(model="claude-sonnet", max_tokens=50, stream=True,
                                              stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].prompt_tokens == 213 and usage[0].completion_tokens == 9
    row = only_row(gw)
    assert_native_row(row, api="chat")
    assert D(row["total_cost_reporting"]) == NATIVE_COST


# ---- count_tokens ---------------------------------------------------------------------------------------------------

def test_count_tokens_is_the_gateways_estimate_and_calls_no_vendor(client, gw, anthro):
    body = {"model": "claude-sonnet", "system": "be brief",
            "messages": [{"role": "user", "content": "How many tokens is this sentence?"}]}
    counted = client.messages.count_tokens(**body)
    chat = messages_to_chat({**body, "max_tokens": 1}).chat
    assert counted.input_tokens == TokenCounter().count_messages(chat["messages"]) > 0
    assert anthro.state.bodies == [] and ledger_rows(gw) == []
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])


# ---- fallback and failures ------------------------------------------------------------------------------------------

def test_overloaded_anthropic_deployment_falls_back_to_an_openai_format_one(client, gw, anthro, fresh_vendors):
    anthro.state.fail_statuses = [529]
    raw = client.messages.with_raw_response.create(model="claude-sonnet", max_tokens=10,
                                                   messages=[{"role": "user", "content": "hello"}])
    message = raw.parse()
    assert raw.headers["x-gateway-provider"] == "deepseek" and raw.headers["x-gateway-attempts"] == "2"
    assert len(anthro.state.bodies) == 1 and fresh_vendors.stats("deepseek")["requests"] == 1
    assert message.content[0].text
    row = only_row(gw)
    assert (row["provider"], row["attempts"], row["status"], row["api"]) == ("deepseek", 2, "success", "messages")
    assert D(row["total_cost_reporting"]) == deepseek_cost(message.usage.input_tokens, message.usage.output_tokens,
                                                           "1", "2")


def test_nothing_is_retried_after_the_first_byte_and_the_row_keeps_what_was_metered(client, gw, anthro, fresh_vendors):
    anthro.state.cut_after = 4  # message_start, ping, content_block_start, one text delta, then `error`
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model="claude-sonnet", max_tokens=10,
                                    messages=[{"role": "user", "content": "hello"}]) as stream:
            for _ in stream:
                pass
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert len(anthro.state.bodies) == 1 and fresh_vendors.stats("deepseek")["requests"] == 0
    row = only_row(gw)
    assert (row["status"], row["error_kind"], row["attempts"]) == ("stream_error", "http_5xx", 1)
    assert_native_row(row, output_tokens=1)  # message_start's usage: what the vendor reported before failing
    cost = (21 * ANTHRO["input"] + 128 * ANTHRO["cached_input"] + 64 * ANTHRO["cache_write"] + ANTHRO["output"]) / 10**6
    assert D(row["total_cost_reporting"]) == cost * FX


def test_every_attempt_failing_is_an_anthropic_api_error(client, gw, anthro, fresh_vendors):
    anthro.state.fail_statuses = [529]
    fresh_vendors.control("deepseek", "error_500", count=5)
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="claude-sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_gateway_refusals_reach_the_sdk_as_its_own_exception_classes(client, gw):
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert nf.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": "The model 'no-such-model' does not exist: not a route or a deployed model"}}
    assert nf.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-sonnet", max_tokens=5, messages=[])
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="gw-0123456789ab-" + "x" * 24, max_retries=0).messages.create(
            model="claude-sonnet", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as native_only:
        client.messages.create(model="deepseek-v2", max_tokens=5, extra_body={"top_k": 3}, messages=[{"role": "user", "content": "x"}])
    assert "'top_k'" in native_only.value.body["error"]["message"]  # type: ignore[index]
    assert ledger_rows(gw) == []


def test_json_schema_for_an_anthropic_deployment_is_a_forced_tool_answered_as_content(gw, anthro):
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-openai-app", max_retries=0)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    completion = oai.chat.completions.create(
        model="claude-sonnet", max_tokens=50, messages=[{"role": "user", "content": "Which city?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    assert completion.choices[0].message.content == '{"city":"Paris"}'
    assert completion.choices[0].finish_reason == "stop" and not completion.choices[0].message.tool_calls
    sent = anthro.state.bodies[-1]
    assert sent["tools"][0]["name"] == "answer" and sent["tools"][0]["input_schema"] == schema
    assert sent["tool_choice"] == {"type": "tool", "name": "answer"}
