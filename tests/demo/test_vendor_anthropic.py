"""The simulated DeepSeek's Anthropic-format endpoint, with the real `anthropic` SDK as the client."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from gateway.demo import anthropic_format
from gateway.demo.vendors import env_for

MODEL = "deepseek-chat"
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "required": ["city"], "properties": {
               "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}
LONG_SYSTEM = "You are the finance team's careful assistant; cite the price table. " * 80  # ~1,400 tokens


@pytest.fixture
def sdk(v) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=v.cluster.anthropic_urls["deepseek"], api_key="demo-deepseek-key",
                               max_retries=0)


def test_only_deepseek_serves_the_anthropic_format_and_its_url_is_in_the_env(cluster):
    assert list(cluster.anthropic_urls) == ["deepseek"]
    assert cluster.anthropic_urls["deepseek"].endswith("/anthropic")
    assert env_for(cluster)["DEMO_DEEPSEEK_ANTHROPIC_URL"] == cluster.anthropic_urls["deepseek"]


def test_messages_create_answers_a_message_with_usage(sdk, cluster):
    r = sdk.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hello"}])
    assert r.type == "message" and r.role == "assistant" and r.model == MODEL
    assert r.content[0].type == "text" and r.content[0].text.startswith("[deepseek-chat] reply to: hello")
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == sdk.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hello"}]).input_tokens
    assert (r.usage.cache_read_input_tokens, r.usage.cache_creation_input_tokens) == (0, 0)
    assert r.usage.output_tokens == 64
    assert cluster.stats("deepseek")["by_endpoint"] == {"messages": 1, "count_tokens": 1}


def test_claude_model_names_are_served_by_the_vendors_chat_model_as_deepseek_does(sdk):
    r = sdk.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert r.model == MODEL


def test_max_tokens_cuts_the_answer_with_stop_reason_max_tokens(sdk):
    r = sdk.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hello"}])
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 5


def test_stop_sequences_end_the_text_where_the_sequence_starts(sdk):
    r = sdk.messages.create(model=MODEL, max_tokens=100, stop_sequences=["reply"],
                               messages=[{"role": "user", "content": "hello"}])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == "reply"
    assert r.content[0].text == "[deepseek-chat] "


def test_the_stream_helper_yields_text_and_the_final_message(sdk):
    with sdk.messages.stream(model=MODEL, max_tokens=100,
                                messages=[{"role": "user", "content": "Stream a haiku"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    plain = sdk.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Stream a haiku"}])
    assert text == plain.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_raw_stream_follows_anthropics_event_sequence(v):
    url = f"{v.cluster.anthropic_urls['deepseek']}/v1/messages"
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "weather in Paris and a word"}]}
    with v.client.stream("POST", url, json=body, headers={"x-api-key": "demo-deepseek-key"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    datas = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names  # every `event:` line names its data's type
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and names[-3] == "content_block_stop"
    assert datas[0]["message"]["stop_reason"] is None and datas[0]["message"]["usage"]["input_tokens"] > 0
    assert datas[-2]["delta"]["stop_reason"] == "tool_use" and datas[-2]["usage"]["output_tokens"] > 0
    partial = "".join(d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta")
    assert json.loads(partial)["city"] == "Paris"


def test_a_tool_round_trip_with_the_sdk(sdk):
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = sdk.messages.create(model=MODEL, max_tokens=200, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.id.startswith("toolu_") and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER["input_schema"])
    assert use.input["city"] == "Paris"
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": "21 C and clear"}]}]
    second = sdk.messages.create(model=MODEL, max_tokens=200, tools=[WEATHER], messages=messages)
    assert second.stop_reason == "end_turn"
    assert "get_weather returned 21 C and clear" in second.content[0].text


def test_streamed_tool_use_reassembles_through_the_stream_helper(sdk):
    with sdk.messages.stream(model=MODEL, max_tokens=200, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=[{"role": "user", "content": "Tokyo please"}]) as stream:
        final = stream.get_final_message()
    use = final.content[0]
    assert use.type == "tool_use" and use.input["city"] == "Tokyo" and final.stop_reason == "tool_use"


def test_tool_choice_any_forces_a_call_and_none_forbids_one(sdk):
    ask = [{"role": "user", "content": "Tell me a joke"}]
    forced = sdk.messages.create(model=MODEL, max_tokens=50, tools=[WEATHER], tool_choice={"type": "any"},
                                    messages=ask)
    assert forced.stop_reason == "tool_use"
    weather = [{"role": "user", "content": "weather in Paris?"}]
    plain = sdk.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER], tool_choice={"type": "none"},
                                   messages=weather)
    assert plain.stop_reason == "end_turn"


def test_cache_control_writes_on_first_sight_and_reads_after(sdk):
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    first = sdk.messages.create(model=MODEL, max_tokens=20, system=system,
                                   messages=[{"role": "user", "content": "first question"}])
    second = sdk.messages.create(model=MODEL, max_tokens=20, system=system,
                                    messages=[{"role": "user", "content": "second, longer question"}])
    cached_prefix = first.usage.cache_creation_input_tokens
    assert cached_prefix >= 1024 and first.usage.cache_read_input_tokens == 0
    assert (second.usage.cache_read_input_tokens, second.usage.cache_creation_input_tokens) == (cached_prefix, 0)
    total = sdk.messages.count_tokens(model=MODEL, system=system,
                                         messages=[{"role": "user", "content": "second, longer question"}])
    assert second.usage.input_tokens == total.input_tokens - cached_prefix  # input excludes the cache


def test_cache_tokens_reach_the_stream_helpers_final_usage(sdk):
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    sdk.messages.create(model=MODEL, max_tokens=20, system=system, messages=[{"role": "user", "content": "a"}])
    with sdk.messages.stream(model=MODEL, max_tokens=20, system=system,
                                messages=[{"role": "user", "content": "b"}]) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens >= 1024 and final.usage.cache_creation_input_tokens == 0


def test_a_breakpoint_below_the_minimum_caches_nothing_and_none_without_cache_control(sdk):
    short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        r = sdk.messages.create(model=MODEL, max_tokens=5, system=short, messages=[{"role": "user", "content": "x"}])
        assert (r.usage.cache_read_input_tokens, r.usage.cache_creation_input_tokens) == (0, 0)
    for _ in range(2):
        r = sdk.messages.create(model=MODEL, max_tokens=5, system=LONG_SYSTEM,
                                   messages=[{"role": "user", "content": "x"}])
        assert (r.usage.cache_read_input_tokens, r.usage.cache_creation_input_tokens) == (0, 0)


def test_the_explicit_cache_expires_after_five_minutes(sdk, cluster):
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    ask = [{"role": "user", "content": "q"}]
    sdk.messages.create(model=MODEL, max_tokens=5, system=system, messages=ask)
    cluster.advance_cache_clock("deepseek", 301)
    r = sdk.messages.create(model=MODEL, max_tokens=5, system=system, messages=ask)
    assert r.usage.cache_read_input_tokens == 0 and r.usage.cache_creation_input_tokens >= 1024


def test_a_bearer_token_is_accepted_like_x_api_key(v):
    c = anthropic.Anthropic(base_url=v.cluster.anthropic_urls["deepseek"], auth_token="demo-deepseek-key",
                            api_key=None, max_retries=0)
    assert c.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]).content


@pytest.mark.parametrize(
    ("setup", "exc", "status", "etype"),
    [
        ({"api_key": "sk-wrong"}, anthropic.AuthenticationError, 401, "authentication_error"),
        ({"model": "gpt-4o"}, anthropic.BadRequestError, 400, "invalid_request_error"),
        ({"mode": "error_529"}, anthropic.InternalServerError, 529, "overloaded_error"),
        ({"mode": "error_429"}, anthropic.RateLimitError, 429, "rate_limit_error"),
        ({"mode": "error_500"}, anthropic.InternalServerError, 500, "api_error"),
        ({"mode": "error_401"}, anthropic.APIStatusError, 402, "billing_error"),
        ({"max_tokens": 8192}, anthropic.BadRequestError, 400, "invalid_request_error"),
    ],
)
def test_errors_come_in_anthropics_shape(v, cluster, setup, exc, status, etype):
    if "mode" in setup:
        cluster.control("deepseek", setup["mode"], count=1)
    c = anthropic.Anthropic(base_url=cluster.anthropic_urls["deepseek"], api_key=setup.get("api_key", "demo-deepseek-key"),
                            max_retries=0)
    with pytest.raises(exc) as info:
        c.messages.create(model=setup.get("model", MODEL), max_tokens=setup.get("max_tokens", 10),
                          messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == etype and body["error"]["message"]


def test_a_missing_max_tokens_is_a_400_naming_the_field(v):
    r = httpx.post(f"{v.cluster.anthropic_urls['deepseek']}/v1/messages", headers={"x-api-key": "demo-deepseek-key"},
                   json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


def test_drop_mid_stream_cuts_the_event_stream(v, cluster):
    cluster.control("deepseek", "drop_mid_stream", count=1)
    url = f"{cluster.anthropic_urls['deepseek']}/v1/messages"
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with v.client.stream("POST", url, json=body, headers={"x-api-key": "demo-deepseek-key"}) as r:
            seen.extend(r.iter_lines())
    assert "event: message_start" in seen and "event: message_stop" not in seen


def test_prompt_pieces_put_breakpoints_after_the_marked_blocks_in_tools_system_messages_order():
    body = {"tools": [dict(WEATHER, cache_control={"type": "ephemeral"})],
            "system": [{"type": "text", "text": "abcdefgh", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    pieces, breakpoints = anthropic_format.prompt_pieces(body)
    tool_tokens = breakpoints[0]
    assert breakpoints == [tool_tokens, tool_tokens + len(["<|sy", "stem", "|>"]) + 2]
    assert pieces[-1] == "<|assistant|>"


def test_error_mid_stream_ends_the_event_stream_with_an_error_event_the_sdk_raises(sdk, cluster):
    cluster.control("deepseek", "error_mid_stream", count=1)
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with sdk.messages.stream(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "x"}]) as stream:
            received.extend(stream.text_stream)
    assert received  # part of the answer came first
    assert "Overloaded" in str(info.value)
