"""Chat completion -> Response object: table-driven, and every answer parses as the OpenAI SDK's `Response`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from gateway.dialects.responses import to_chat
from gateway.dialects.responses_output import from_completion, render
from gateway.domain import Usage

RID = "resp_" + "ab" * 24
ECHO = to_chat({"model": "auto", "input": "x"}).echo


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
                           "model": "deepseek-chat",
                           "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                        "finish_reason": finish}]}
    if usage is not None:
        obj["usage"] = usage
    return obj


USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
         "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 12}}

CASES: list[tuple[str, dict[str, Any], str, dict[str, Any] | None, list[dict[str, Any]]]] = [
    ("text", {"content": "Hello."}, "completed", None,
     [{"type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "output_text", "text": "Hello.", "annotations": [], "logprobs": []}]}]),
    ("cut at max tokens", {"content": "Hel"}, "incomplete", {"reason": "max_output_tokens"},
     [{"type": "message", "role": "assistant", "status": "incomplete",
       "content": [{"type": "output_text", "text": "Hel", "annotations": [], "logprobs": []}]}]),
    ("content filter", {"content": ""}, "incomplete", {"reason": "content_filter"}, []),
    ("tool calls, text first", {"content": "Let me look.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
        {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}, "completed", None,
     [{"type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []}]},
      {"type": "function_call", "status": "completed", "call_id": "call_1", "name": "weather",
       "arguments": "{\"city\":\"Paris\"}"},
      {"type": "function_call", "status": "completed", "call_id": "call_2", "name": "time", "arguments": "{}"}]),
    ("reasoning vendor", {"content": "4", "reasoning_content": "2+2"}, "completed", None,
     [{"type": "reasoning", "status": "completed", "summary": [],
       "content": [{"type": "reasoning_text", "text": "2+2"}]},
      {"type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "output_text", "text": "4", "annotations": [], "logprobs": []}]}]),
    ("refusal", {"content": None, "refusal": "I can't."}, "completed", None,
     [{"type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "refusal", "refusal": "I can't."}]}]),
]


@pytest.mark.parametrize("name,message,status,incomplete,output", CASES, ids=[c[0] for c in CASES])
def test_completion_becomes_a_response(name: str, message: dict[str, Any], status: str,
                                       incomplete: dict[str, Any] | None, output: list[dict[str, Any]]) -> None:
    finish = {"cut at max tokens": "length", "content filter": "content_filter"}.get(name, "stop")
    if message.get("tool_calls"):
        finish = "tool_calls"
    resp = from_completion(completion(message, finish, USAGE), ECHO, RID)
    assert resp["status"] == status
    assert resp["incomplete_details"] == incomplete
    assert [{k: v for k, v in item.items() if k != "id"} for item in resp["output"]] == output
    ids = [item["id"] for item in resp["output"]]
    assert len(set(ids)) == len(ids)
    parsed = Response.model_validate(resp)  # the SDK's own model accepts it
    assert parsed.status == status


def test_usage_counts_cached_tokens_inside_input_tokens_as_the_api_does() -> None:
    resp = from_completion(completion({"content": "x"}, usage=USAGE), ECHO, RID)
    assert resp["usage"] == {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
                             "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12},
                             "total_tokens": 150}


def test_deepseek_cache_hit_usage_is_read_the_gateways_way() -> None:
    usage = {"prompt_tokens": 50, "completion_tokens": 5, "prompt_cache_hit_tokens": 40,
             "prompt_cache_miss_tokens": 10}
    resp = from_completion(completion({"content": "x"}, usage=usage), ECHO, RID)
    assert resp["usage"]["input_tokens"] == 50
    assert resp["usage"]["input_tokens_details"]["cached_tokens"] == 40


def test_metered_usage_is_used_when_the_vendor_sent_none() -> None:
    resp = from_completion(completion({"content": "x"}), ECHO, RID, usage=Usage(7, 0, 3, source="estimated"))
    assert resp["usage"]["input_tokens"] == 7 and resp["usage"]["output_tokens"] == 3
    assert from_completion(completion({"content": "x"}), ECHO, RID)["usage"] is None


def test_response_echoes_the_request_and_names_the_vendor_model() -> None:
    tr = to_chat({"model": "auto", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}],
                  "tool_choice": "required", "metadata": {"a": "b"}, "instructions": "sys", "temperature": 0.1,
                  "text": {"format": {"type": "json_schema", "name": "S", "schema": {"type": "object"}}}})
    resp = orjson.loads(render(completion({"content": "{}"}, usage=USAGE), tr.echo, RID))
    assert resp["id"] == RID and resp["object"] == "response" and resp["created_at"] == 1700000000
    assert resp["model"] == "deepseek-chat"
    assert resp["tools"] == [{"type": "function", "name": "f", "parameters": {}}]
    assert resp["tool_choice"] == "required" and resp["metadata"] == {"a": "b"} and resp["instructions"] == "sys"
    assert resp["text"]["format"]["name"] == "S" and resp["temperature"] == 0.1
    assert resp["store"] is False and resp["previous_response_id"] is None
    parsed = Response.model_validate(resp)
    assert parsed.output_text == "{}"
