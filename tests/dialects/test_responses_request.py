"""Responses request -> canonical chat body: table-driven, both what is translated and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.dialects.responses import to_chat
from gateway.errors import BadRequest

M = "auto"


def chat_of(**fields: Any) -> dict[str, Any]:
    return to_chat({"model": M, **fields}).body


TRANSLATED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string input is one user message",
     {"input": "hi"}, {"model": M, "messages": [{"role": "user", "content": "hi"}]}),
    ("instructions come first as a system message",
     {"input": "hi", "instructions": "be brief"},
     {"model": M, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
    ("developer role becomes system, easy messages without type",
     {"input": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"}]},
     {"model": M, "messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}]}),
    ("input_text parts join into one string",
     {"input": [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]},
     {"model": M, "messages": [{"role": "user", "content": "ab"}]}),
    ("an image keeps the parts, as chat image_url parts",
     {"input": [{"role": "user", "content": [
         {"type": "input_text", "text": "what is this?"},
         {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}]}]},
     {"model": M, "messages": [{"role": "user", "content": [
         {"type": "text", "text": "what is this?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]}]}),
    ("a replayed assistant message with output_text, then its calls grouped, then their outputs",
     {"input": [
         {"role": "user", "content": "weather in Paris and Rome?"},
         {"type": "reasoning", "id": "rs_1", "summary": []},
         {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
          "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
         {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather",
          "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
         {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
         {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
         {"type": "function_call_output", "call_id": "call_b",
          "output": [{"type": "input_text", "text": "rain"}]}]},
     {"model": M, "messages": [
         {"role": "user", "content": "weather in Paris and Rome?"},
         {"role": "assistant", "content": "Checking.", "tool_calls": [
             {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
             {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
         {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
         {"role": "tool", "tool_call_id": "call_b", "content": "rain"}]}),
    ("calls after a tool result open a new assistant message",
     {"input": [{"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"}]},
     {"model": M, "messages": [
         {"role": "user", "content": "go"},
         {"role": "assistant", "content": None,
          "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "c1", "content": "1"},
         {"role": "assistant", "content": None,
          "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
    ("flat function tools become nested; tool_choice, parallel_tool_calls kept",
     {"input": "x", "tools": [{"type": "function", "name": "f", "description": "d",
                               "parameters": {"type": "object", "properties": {}}, "strict": True}],
      "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False},
     {"model": M, "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                  "parameters": {"type": "object", "properties": {}},
                                                  "strict": True}}],
      "parallel_tool_calls": False, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ("parallel_tool_calls without tools is not forwarded (OpenAI refuses it)",
     {"input": "x", "parallel_tool_calls": True, "tool_choice": "none"},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}),
    ("sampling, max_output_tokens -> max_tokens, user; metadata, store, include, hints not forwarded",
     {"input": "x", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64, "user": "u1",
      "metadata": {"k": "v"}, "store": True, "include": ["reasoning.encrypted_content"], "truncation": "disabled",
      "prompt_cache_key": "p", "safety_identifier": "s", "service_tier": "auto",
      "stream_options": {"include_obfuscation": False}},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "max_tokens": 64, "temperature": 0.2,
      "top_p": 0.9, "user": "u1"}),
    ("text.format json_schema -> response_format json_schema",
     {"input": "x", "text": {"format": {"type": "json_schema", "name": "P", "strict": True,
                                        "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}},
     {"model": M, "messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {
          "name": "P", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": True}}}),
    ("text.format json_object and text",
     {"input": "x", "text": {"format": {"type": "json_object"}}},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
    ("text.format text adds nothing",
     {"input": "x", "text": {"format": {"type": "text"}}},
     {"model": M, "messages": [{"role": "user", "content": "x"}]}),
    ("reasoning.effort -> reasoning_effort",
     {"input": "x", "reasoning": {"effort": "low"}},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}),
    ("reasoning effort and verbosity as the Agents SDK sends them for gpt-5 names -> chat's knobs",
     {"input": "x", "reasoning": {"effort": "none"}, "text": {"verbosity": "low"}},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "none", "verbosity": "low"}),
    ("stream asks the vendor for usage",
     {"input": "x", "stream": True},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "stream": True,
      "stream_options": {"include_usage": True}}),
    ("gateway constraints stay for the parser",
     {"input": "x", "gateway": {"min_quality": 3}},
     {"model": M, "messages": [{"role": "user", "content": "x"}], "gateway": {"min_quality": 3}}),
]


@pytest.mark.parametrize("name,request_fields,expected", TRANSLATED, ids=[t[0] for t in TRANSLATED])
def test_request_translates_to_chat(name: str, request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_of(**request_fields) == expected


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
    ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"background": True}, "background", "unsupported_parameter"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
    ({"max_tool_calls": 3}, "max_tool_calls", "unsupported_parameter"),
    ({"context_management": [{"type": "compaction"}]}, "context_management", "unsupported_parameter"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": ["v"]}]},
     "tools[1].type", "unsupported_parameter"),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [{"type": "image_generation"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "unsupported_parameter"),
    ({"include": ["message.output_text.logprobs"]}, "include", "unsupported_parameter"),
    ({"truncation": "auto"}, "truncation", "unsupported_parameter"),
    ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning.summary", "unsupported_parameter"),
    ({"text": {"verbosity": 1}}, "text.verbosity", "invalid_request"),
    ({"moderation": {"mode": "block"}}, "moderation", "unsupported_parameter"),
    ({"top_logprobs": 2}, "top_logprobs", "unsupported_parameter"),
    ({"service_tier": "flex"}, "service_tier", "unsupported_parameter"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0].file_id", "unsupported_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]},
     "input[0].content[0].type", "unsupported_parameter"),
    ({"frequency_penalty": 1}, "frequency_penalty", "unknown_parameter"),
    ({"model": None}, "model", "invalid_request"),
    ({"input": 5}, "input", "invalid_request"),
    ({"input": []}, "input", "invalid_request"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_request"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input[0]", "invalid_request"),
    ({"max_output_tokens": 0}, "max_output_tokens", "invalid_request"),
    ({"temperature": "hot"}, "temperature", "invalid_request"),
    ({"stream": "yes"}, "stream", "invalid_request"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format", "invalid_request"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_request"),
]


@pytest.mark.parametrize("fields,param,code", REFUSED, ids=[r[1] + ":" + r[2] for r in REFUSED])
def test_request_refused_with_a_400_naming_the_field(fields: dict[str, Any], param: str, code: str) -> None:
    body = {"model": M, "input": "x", **fields}
    with pytest.raises(BadRequest) as info:
        to_chat(body)
    assert info.value.param == param
    assert info.value.code == code
    assert param.split("[")[0].split(".")[0] in info.value.message


def test_echo_reports_the_request_parameters_with_the_api_defaults() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}]
    echo = to_chat({"model": M, "input": "x", "tools": tools, "metadata": {"k": "v"}, "temperature": 0.5,
                    "instructions": "sys", "max_output_tokens": 10, "reasoning": {"effort": "low"}}).echo
    assert echo["tools"] == tools
    assert echo["metadata"] == {"k": "v"}
    assert echo["temperature"] == 0.5
    assert echo["instructions"] == "sys"
    assert echo["max_output_tokens"] == 10
    assert echo["tool_choice"] == "auto"
    assert echo["parallel_tool_calls"] is True
    assert echo["text"] == {"format": {"type": "text"}}
    assert echo["reasoning"] == {"effort": "low", "summary": None}


def test_stream_flag_is_reported() -> None:
    assert to_chat({"model": M, "input": "x", "stream": True}).stream is True
    assert to_chat({"model": M, "input": "x"}).stream is False


def test_translation_does_not_change_the_clients_body() -> None:
    body = {"model": M, "input": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "name": "f"}]}
    before = repr(body)
    to_chat(body)
    assert repr(body) == before
