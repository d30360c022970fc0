"""Tool calls over real HTTP, with the OpenAI SDK as the client: when the model calls, what, and how it streams."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "required": ["city", "unit"], "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}}
STOCK = {"type": "function", "function": {
    "name": "lookup_stock", "description": "Share price of a listed company",
    "parameters": {"type": "object", "required": ["ticker"], "properties": {"ticker": {"type": "string"}}}}}
TOOLS = [WEATHER, STOCK]


@pytest.fixture
def sdk(v) -> openai.OpenAI:
    return openai.OpenAI(base_url=v.cluster.urls["deepseek"], api_key="demo-deepseek-key", max_retries=0)


def ask(sdk: openai.OpenAI, text: str, **extra: Any) -> Any:
    return sdk.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": text}], **extra)


def parameters(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


@pytest.mark.parametrize(
    ("text", "extra", "called"),
    [
        ("What is the weather in Hangzhou?", {}, ["get_weather"]),  # a trigger word; related by description
        ("Please call get_weather for Paris", {}, ["get_weather"]),  # named
        ("get weather and lookup stock for BABA", {}, ["get_weather", "lookup_stock"]),  # both named: parallel
        ("get weather and lookup stock", {"parallel_tool_calls": False}, ["get_weather"]),
        ("use a tool", {}, ["get_weather"]),  # trigger word, nothing related: the first tool
        ("Tell me a joke", {}, []),  # no trigger: text
        ("Tell me a joke", {"tool_choice": "required"}, ["get_weather"]),
        ("Tell me a joke", {"tool_choice": {"type": "function", "function": {"name": "lookup_stock"}}},
         ["lookup_stock"]),
        ("What is the weather in Paris?", {"tool_choice": "none"}, []),
    ],
)
def test_the_model_calls_tools_by_the_documented_rule(sdk, text, extra, called):
    r = ask(sdk, text, tools=TOOLS, **extra)
    choice = r.choices[0]
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == called
    assert choice.finish_reason == ("tool_calls" if called else "stop")
    assert (choice.message.content is None) is bool(called)
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), parameters(call.function.name))
        assert call.id.startswith("call_") and call.type == "function"
    assert len({c.id for c in calls}) == len(calls)
    assert r.usage.completion_tokens > 0


def test_arguments_are_plausible_a_city_is_the_city_the_user_named(sdk):
    call = ask(sdk, "What is the weather in Hangzhou?", tools=TOOLS).choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    assert args["city"] == "Hangzhou" and args["unit"] == "celsius" and 1 <= args["days"] <= 7


def test_no_tools_offered_means_no_call_even_when_asked(sdk):
    r = ask(sdk, "use the weather tool")
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"


def test_a_tool_round_trip_ends_in_text_quoting_the_result(sdk):
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = sdk.chat.completions.create(model="deepseek-chat", messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "clear"}'})
    second = sdk.chat.completions.create(model="deepseek-chat", messages=messages, tools=TOOLS)
    text = second.choices[0].message.content
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert "get_weather" in text and '"temperature_c": 21' in text
    # The history (call and result included) is the prompt, and its shared prefix is a cache hit.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_streamed_tool_calls_arrive_in_pieces_and_reassemble_to_the_non_streamed_arguments(sdk):
    text = "get weather and lookup stock for BABA"
    whole = ask(sdk, text, tools=TOOLS).choices[0].message.tool_calls
    stream = ask(sdk, text, tools=TOOLS, stream=True, stream_options={"include_usage": True})
    pieces: dict[int, dict[str, Any]] = {}
    finish, usage, argument_chunks = None, None, 0
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = pieces.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
                    argument_chunks += 1
    assert finish == "tool_calls"
    assert [(p["name"], json.loads(p["arguments"])) for p in pieces.values()] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole]
    assert all(p["id"].startswith("call_") for p in pieces.values())
    assert argument_chunks >= 4  # in pieces, not one blob
    assert usage is not None and usage.completion_tokens > 0


def test_the_sdk_stream_helper_accumulates_the_streamed_tool_call(sdk):
    with sdk.chat.completions.stream(model="deepseek-chat", tools=TOOLS,
                                     messages=[{"role": "user", "content": "weather in Tokyo?"}]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Tokyo"


@pytest.mark.parametrize("provider", ["zhipu", "hunyuan", "volcengine"])
def test_every_dialect_streams_tool_calls_with_its_own_usage_placement(v, provider):
    events, _ = v.stream_events(provider, include_usage=True, tools=TOOLS, tool_choice="required")
    args = "".join(tc["function"].get("arguments", "") for e in events for c in e["choices"]
                   for tc in c["delta"].get("tool_calls", []))
    jsonschema.validate(json.loads(args), parameters("get_weather"))
    finish = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finish == ["tool_calls"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"tools": "get_weather"}, "tools must be an array"),
     ({"tools": [{"type": "function"}]}, "tools[0]"),
     ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope")],
)
def test_malformed_tools_are_a_400_in_the_vendors_format(v, extra, message):
    r = v.chat("deepseek", "hi", **extra)
    assert r.status_code == 400
    assert message in r.json()["error"]["message"]
