"""Messages <-> chat request and answer translation, both directions, table-driven."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.dialects.anthropic import chat_to_message, messages_to_chat, usage_from_anthropic
from gateway.dialects.anthropic_vendor import Untranslatable, chat_to_messages, message_to_chat
from gateway.domain import Usage
from gateway.errors import BadRequest
from gateway.segments import CacheMarks

BASE = {"model": "auto", "max_tokens": 100}
IMG_B64 = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
IMG_URL = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
TOOL = {"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
FN_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": TOOL["input_schema"]}}

# (name, Messages request fields, expected chat fields (subset), expected native_only)
CLIENT_REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ("string content",
     {"messages": [{"role": "user", "content": "hi"}]},
     {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}, ()),
    ("system string",
     {"system": "be brief", "messages": [{"role": "user", "content": "hi"}]},
     {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}, ()),
    ("system blocks with cache_control are joined",
     {"system": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"}],
      "messages": [{"role": "user", "content": "hi"}]},
     {"messages": [{"role": "system", "content": "a\n\nb"}, {"role": "user", "content": "hi"}]}, ()),
    ("images base64 and url",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "what"}, IMG_B64, IMG_URL]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "what"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
         {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, ()),
    ("tool round trip",
     {"tools": [TOOL], "tool_choice": {"type": "any"},
      "messages": [{"role": "user", "content": "weather?"},
                   {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                                     {"type": "text", "text": "checking"},
                                                     {"type": "tool_use", "id": "t1", "name": "get_weather",
                                                      "input": {"city": "Paris"}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                                                {"type": "text", "text": "and?"}]}]},
     {"tools": [FN_TOOL], "tool_choice": "required",
      "messages": [{"role": "user", "content": "weather?"},
                   {"role": "assistant", "content": "checking", "tool_calls": [
                       {"id": "t1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                   {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                   {"role": "user", "content": "and?"}]}, ()),
    ("tool_result with blocks and is_error",
     {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                                                 "content": [{"type": "text", "text": "boom"}]}]}]},
     {"messages": [{"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}]}, ()),
    ("tool_choice tool, no parallel",
     {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
      "messages": [{"role": "user", "content": "hi"}]},
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False}, ()),
    ("tool_choice auto and none",
     {"tools": [TOOL], "tool_choice": {"type": "none"}, "messages": [{"role": "user", "content": "hi"}]},
     {"tool_choice": "none"}, ()),
    ("sampling, stops, metadata, stream",
     {"temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "stream": True,
      "messages": [{"role": "user", "content": "hi"}]},
     {"temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "u1", "stream": True}, ()),
    ("thinking parameter dropped",
     {"thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [{"role": "user", "content": "hi"}]},
     {"messages": [{"role": "user", "content": "hi"}]}, ()),
    ("top_k, documents and server tools are native only",
     {"top_k": 5, "tools": [TOOL, {"type": "web_search_20250305", "name": "web_search"}],
      "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}},
                                                {"type": "text", "text": "hi"}]}]},
     {"tools": [FN_TOOL], "messages": [{"role": "user", "content": "hi"}]},
     ("'top_k'", "messages.0.content.0: block type 'document'", "tools.1: server tool 'web_search_20250305'")),
]


@pytest.mark.parametrize("name,request_fields,expected,native", CLIENT_REQUESTS, ids=[c[0] for c in CLIENT_REQUESTS])
def test_messages_request_translates_to_chat(name: str, request_fields: dict[str, Any], expected: dict[str, Any],
                                             native: tuple[str, ...]) -> None:
    got = messages_to_chat({**BASE, **request_fields})
    for key, value in expected.items():
        assert got.chat[key] == value, key
    assert got.native_only == native
    assert "thinking" not in got.chat and "top_k" not in got.chat and "metadata" not in got.chat


CC = {"cache_control": {"type": "ephemeral"}}
# (name, Messages request fields, expected marks: chat message indices and whether the tools carry one)
MARKED_REQUESTS: list[tuple[str, dict[str, Any], CacheMarks | None]] = [
    ("no mark", {"system": "s", "messages": [{"role": "user", "content": "hi"}]}, None),
    ("system block", {"system": [{"type": "text", "text": "s", **CC}], "messages": [{"role": "user", "content": "hi"}]},
     CacheMarks((0,))),
    ("a tool", {"tools": [{**TOOL, **CC}], "messages": [{"role": "user", "content": "hi"}]}, CacheMarks((), True)),
    ("the last user block, after a tool round", {"system": "s", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny", **CC}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny.", **CC}]},
        {"role": "user", "content": [{"type": "text", "text": "and?"}, {"type": "text", "text": "tomorrow?", **CC}]}]},
     CacheMarks((3, 4, 5))),  # the tool message, the assistant's answer, the last user message
]


@pytest.mark.parametrize("name,request_fields,marks", MARKED_REQUESTS, ids=[c[0] for c in MARKED_REQUESTS])
def test_cache_control_marks_are_kept_beside_the_chat_body_never_in_it(name: str, request_fields: dict[str, Any],
                                                                       marks: CacheMarks | None) -> None:
    got = messages_to_chat({**BASE, **request_fields})
    assert got.marks == marks
    assert b"cache_control" not in orjson.dumps(got.chat)  # OpenAI-format vendors are never sent them


BAD_CLIENT_REQUESTS = [
    ("no max_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ("no messages", {**BASE, "messages": []}, "messages"),
    ("bad role", {**BASE, "messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
    ("bad system", {**BASE, "system": 3, "messages": [{"role": "user", "content": "hi"}]}, "system"),
    ("bad image source", {**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
     "messages.0.content.0"),
    ("bad tool_choice", {**BASE, "tool_choice": {"type": "sometimes"},
                         "messages": [{"role": "user", "content": "hi"}]}, "tool_choice"),
    ("stop_sequences not strings", {**BASE, "stop_sequences": [1], "messages": [{"role": "user", "content": "hi"}]},
     "stop_sequences"),
]


@pytest.mark.parametrize("name,body,param", BAD_CLIENT_REQUESTS, ids=[c[0] for c in BAD_CLIENT_REQUESTS])
def test_malformed_messages_request_is_a_bad_request_naming_the_field(name: str, body: dict[str, Any],
                                                                       param: str) -> None:
    with pytest.raises(BadRequest) as info:
        messages_to_chat(body)
    assert info.value.param == param


# ---- vendor side: chat -> Messages ----------------------------------------------------------------------------

VENDOR_REQUESTS: list[tuple[str, dict[str, Any], int | None, dict[str, Any], str | None]] = [
    ("system messages to system, max_tokens from the request",
     {"messages": [{"role": "system", "content": "a"}, {"role": "developer", "content": "b"},
                   {"role": "user", "content": "hi"}], "max_completion_tokens": 50},
     4096, {"system": "a\n\nb", "max_tokens": 50, "messages": [{"role": "user", "content": [{"type": "text",
                                                                                         "text": "hi"}]}]}, None),
    ("max_tokens from the deployment",
     {"messages": [{"role": "user", "content": "hi"}]}, 777, {"max_tokens": 777}, None),
    ("max_tokens default", {"messages": [{"role": "user", "content": "hi"}]}, None, {"max_tokens": 4096}, None),
    ("tool calls and results become blocks, consecutive turns merge",
     {"tools": [FN_TOOL], "tool_choice": "required", "parallel_tool_calls": False,
      "messages": [{"role": "user", "content": "weather?"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "t1", "type": "function", "function": {"name": "get_weather",
                                                                     "arguments": '{"city":"Paris"}'}}]},
                   {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                   {"role": "user", "content": "thanks"}]},
     None, {"tools": [TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                                            "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                       "content": "sunny"},
                                                      {"type": "text", "text": "thanks"}]}]}, None),
    ("images", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     None, {"messages": [{"role": "user", "content": [IMG_B64, IMG_URL]}]}, None),
    ("sampling: temperature clamped to 1, stop string, user",
     {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.7, "top_p": 0.5, "stop": "END",
      "user": "u", "stream": True, "stream_options": {"include_usage": True}, "seed": 3},
     None, {"temperature": 1.0, "top_p": 0.5, "stop_sequences": ["END"], "metadata": {"user_id": "u"},
            "stream": True}, None),
    ("json_schema without tools: a forced tool",
     {"messages": [{"role": "user", "content": "hi"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": TOOL["input_schema"]}}},
     None, {"tools": [{"name": "answer", "description": "Give the answer as this tool's input.",
                       "input_schema": TOOL["input_schema"]}], "tool_choice": {"type": "tool", "name": "answer"}},
     "answer"),
    ("json_object with client tools: a system instruction",
     {"messages": [{"role": "user", "content": "hi"}], "tools": [FN_TOOL], "response_format": {"type": "json_object"}},
     None, {"tools": [TOOL], "system": 'Respond with only a JSON object matching this JSON schema, no other text: '
                                      '{"type":"object","additionalProperties":true}'}, None),
]


@pytest.mark.parametrize("name,chat,max_out,expected,json_tool", VENDOR_REQUESTS, ids=[c[0] for c in VENDOR_REQUESTS])
def test_chat_request_translates_to_messages(name: str, chat: dict[str, Any], max_out: int | None,
                                             expected: dict[str, Any], json_tool: str | None) -> None:
    got, tool = chat_to_messages({"model": "claude-x", **chat}, max_out)
    assert got["model"] == "claude-x"
    for key, value in expected.items():
        assert got[key] == value, key
    assert tool == json_tool
    assert not {"seed", "stream_options", "response_format", "parallel_tool_calls", "user"} & set(got)


@pytest.mark.parametrize("chat,param", [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools.0"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "function": {"name": "f", "arguments": "{not json"}}]}]}, "messages.0.tool_calls.0"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages.0.content"),
])
def test_what_messages_cannot_express_is_untranslatable(chat: dict[str, Any], param: str) -> None:
    with pytest.raises(Untranslatable) as info:
        chat_to_messages({"model": "m", "messages": [{"role": "user", "content": "x"}], **chat}, None)
    assert info.value.param == param


def test_client_and_vendor_request_translations_are_inverse() -> None:
    original = {**BASE, "system": "sys", "tools": [TOOL], "tool_choice": {"type": "auto"},
                "messages": [{"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                             {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                                                "input": {"city": "Paris"}}]},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                           "content": "sunny"}]}],
                "stop_sequences": ["END"], "temperature": 0.3}
    back, _ = chat_to_messages(messages_to_chat(original).chat, None)
    assert back == {**original, "model": "auto"}


# ---- answers ----------------------------------------------------------------------------------------------------

USAGE = {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50}


def test_anthropic_usage_input_excludes_cache_reads_and_writes() -> None:
    assert usage_from_anthropic(USAGE) == Usage(10, 100, 7, source="provider", cache_write_tokens=50)
    assert usage_from_anthropic({"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": None}) == \
        Usage(3, 0, 1)
    assert usage_from_anthropic("nope") is None


MESSAGES = [
    ("text", [{"type": "text", "text": "hello"}], "end_turn", {"content": "hello"}, "stop"),
    ("tool use", [{"type": "text", "text": "let me"}, {"type": "tool_use", "id": "t1", "name": "f",
                                                       "input": {"a": 1}}], "tool_use",
     {"content": "let me", "tool_calls": [{"id": "t1", "type": "function",
                                           "function": {"name": "f", "arguments": '{"a":1}'}}]}, "tool_calls"),
    ("thinking", [{"type": "thinking", "thinking": "hm", "signature": "x"}, {"type": "text", "text": "ok"}],
     "max_tokens", {"content": "ok", "reasoning_content": "hm"}, "length"),
    ("stop sequence", [{"type": "text", "text": "a"}], "stop_sequence", {"content": "a"}, "stop"),
]


@pytest.mark.parametrize("name,content,stop,message,finish", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_message_answer_translates_to_chat_completion(name: str, content: list[Any], stop: str,
                                                      message: dict[str, Any], finish: str) -> None:
    chat = message_to_chat({"id": "msg_1", "model": "claude-x", "content": content, "stop_reason": stop,
                            "usage": USAGE})
    assert chat["choices"][0]["message"] == {"role": "assistant", **message}
    assert chat["choices"][0]["finish_reason"] == finish
    assert chat["usage"] == {"prompt_tokens": 160, "completion_tokens": 7, "total_tokens": 167,
                             "prompt_tokens_details": {"cached_tokens": 100}, "cache_creation_input_tokens": 50}


def test_forced_json_tool_answer_becomes_text() -> None:
    chat = message_to_chat({"content": [{"type": "text", "text": "Here you go:"},
                                        {"type": "tool_use", "id": "t", "name": "answer", "input": {"x": 1}}],
                            "stop_reason": "tool_use", "usage": USAGE}, json_tool="answer")
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": '{"x":1}'}
    assert chat["choices"][0]["finish_reason"] == "stop"


CHATS = [
    ("text", {"content": "hi"}, "stop", [{"type": "text", "text": "hi"}], "end_turn"),
    ("length", {"content": "hi"}, "length", [{"type": "text", "text": "hi"}], "max_tokens"),
    ("tool calls parsed", {"content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "f", "arguments": '{"a": [1]}'}}]}, "tool_calls",
     [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": [1]}}], "tool_use"),
    ("bad arguments kept", {"content": "", "tool_calls": [{"id": "c1", "function": {"name": "f",
                                                                                  "arguments": "{oops"}}]},
     "tool_calls", [{"type": "tool_use", "id": "c1", "name": "f", "input": {"_unparsed_arguments": "{oops"}}],
     "tool_use"),
    ("reasoning", {"content": "ok", "reasoning_content": "think"}, "stop",
     [{"type": "thinking", "thinking": "think", "signature": ""}, {"type": "text", "text": "ok"}], "end_turn"),
    ("content filter", {"content": ""}, "content_filter", [], "refusal"),
]


@pytest.mark.parametrize("name,message,finish,content,stop", CHATS, ids=[c[0] for c in CHATS])
def test_chat_completion_translates_to_message(name: str, message: dict[str, Any], finish: str,
                                               content: list[Any], stop: str) -> None:
    obj = {"id": "chatcmpl-1", "model": "deepseek-chat",
           "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}]}
    got = chat_to_message(obj, Usage(5, 3, 2, cache_write_tokens=1))
    assert got == {"id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "deepseek-chat",
                   "content": content, "stop_reason": stop, "stop_sequence": None,
                   "usage": {"input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": 1,
                             "cache_read_input_tokens": 3}}
    orjson.dumps(got)
