"""POST /v1/responses routed to an `api_style: anthropic` deployment: the Responses request becomes chat, the
adapter makes it Messages, and the answer comes back as a Response whose usage counts the vendor's prompt-cache
reads and writes inside input_tokens; billed to the digit (fixtures and prices of tests/e2e/test_anthropic_sdk.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import openai

from tests.e2e.anthropic_vendor import TEXT, USAGE
from tests.e2e.test_anthropic_sdk import (  # noqa: F401  (pytest fixtures)
    NATIVE_COST,
    anthro,
    anthro_vendor,
    assert_native_row,
    gw,
    only_row,
)

PROMPT = USAGE["input_tokens"] + USAGE["cache_read_input_tokens"] + USAGE["cache_creation_input_tokens"]


def responses_client(gw) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-openai-app", max_retries=0)


def assert_usage(usage) -> None:  # type: ignore[no-untyped-def]
    assert usage.input_tokens == PROMPT  # Responses input_tokens include cache reads and writes
    assert usage.input_tokens_details.cached_tokens == USAGE["cache_read_input_tokens"]
    assert usage.input_tokens_details.cache_write_tokens == USAGE["cache_creation_input_tokens"]
    assert usage.output_tokens == USAGE["output_tokens"] and usage.total_tokens == PROMPT + USAGE["output_tokens"]


def test_response_from_an_anthropic_deployment_counts_cache_reads_and_writes(gw, anthro):
    raw = responses_client(gw).responses.with_raw_response.create(
        model="claude-sonnet", instructions="be brief", input="hi", max_output_tokens=50)
    response = raw.parse()
    assert response.output_text == TEXT and response.status == "completed"
    assert anthro.state.bodies[-1] == {"model": "claude-sonnet-4-5", "max_tokens": 50, "system": "be brief",
                                       "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert_usage(response.usage)
    assert raw.headers["x-gateway-cost"] == str(NATIVE_COST)
    row = only_row(gw)
    assert_native_row(row, api="responses")  # cache reads and writes recorded and priced
    assert Decimal(row["total_cost_reporting"]) == NATIVE_COST


def test_streamed_response_from_an_anthropic_deployment_has_the_final_usage(gw, anthro):
    with responses_client(gw).responses.stream(model="claude-sonnet", input="hi", max_output_tokens=50) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == TEXT
    assert_usage(final.usage)
    row = only_row(gw)
    assert_native_row(row, api="responses")  # cache reads and writes recorded and priced
    assert Decimal(row["total_cost_reporting"]) == NATIVE_COST


def test_function_call_from_an_anthropic_deployment_round_trips(gw, anthro):
    client = responses_client(gw)
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    first = client.responses.create(model="claude-sonnet", input="Weather in Paris?", tools=[tool])
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)
    assert anthro.state.bodies[-1]["tools"][0]["input_schema"] == tool["parameters"]
    history = [{"role": "user", "content": "Weather in Paris?"}, *[i.model_dump(exclude_none=True) for i in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = client.responses.create(model="claude-sonnet", input=history, tools=[tool])
    assert second.status == "completed" and second.output_text
    sent = anthro.state.bodies[-1]["messages"]
    assert sent[1]["content"][-1]["type"] == "tool_use" and sent[1]["content"][-1]["id"] == call.call_id
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny"}
