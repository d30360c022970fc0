"""Chat chunks -> the Responses event sequence, checked with the OpenAI SDK's own event models and its stream
accumulator, including every prefix of a vendor stream followed by a failure."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai import omit
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.dialects.responses import to_chat
from gateway.dialects.responses_stream import ResponsesEncoder
from gateway.domain import Usage

RID = "resp_" + "cd" * 24
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None,
          choices: bool = True) -> bytes:
    obj: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat",
                           "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage is not None:
        obj["usage"] = usage
    return orjson.dumps(obj)


USAGE = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 8}}
TEXT = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
        chunk(finish="stop"), chunk(usage=USAGE, choices=False), b"[DONE]"]
MIXED = [chunk({"role": "assistant", "reasoning_content": "think"}), chunk({"content": "Let me check."}),
         chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "weather", "arguments": ""}}]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
         chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                "function": {"name": "time", "arguments": "{}"}}]}),
         chunk(finish="tool_calls"), chunk(usage=USAGE, choices=False), b"[DONE]"]
CUT = [chunk({"content": "Hel"}), chunk(finish="length"), chunk(usage=USAGE, choices=False), b"[DONE]"]


def encoder() -> ResponsesEncoder:
    return ResponsesEncoder(to_chat({"model": "auto", "input": "x"}).echo, RID, "auto", created_at=1700000000)


def parse_sse(data: bytes) -> list[dict[str, Any]]:
    """Frames -> payloads, checking each frame's `event:` line names its payload's type."""
    events = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        payload = orjson.loads(data_line[6:])
        assert payload["type"] == event_line[7:].decode()
        events.append(payload)
    return events


def check_well_formed(events: list[dict[str, Any]]) -> list[Any]:
    """The invariants a client relies on; returns the SDK's parsed events."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert events[-1]["type"] in terminal
    assert all(e["type"] not in terminal for e in events[:-1])
    added: dict[int, dict[str, Any]] = {}
    done: set[int] = set()
    for e in events:
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(added)
            added[e["output_index"]] = e["item"]
        elif e["type"] == "response.output_item.done":
            assert e["output_index"] in added and e["output_index"] not in done
            assert e["item"]["id"] == added[e["output_index"]]["id"]
            done.add(e["output_index"])
        elif "output_index" in e:
            assert e["output_index"] in added and e["output_index"] not in done
            assert e["item_id"] == added[e["output_index"]]["id"]
    final = events[-1]["response"]
    assert [item["id"] for item in final["output"]] == [added[i]["id"] for i in range(len(added))]
    parsed = [EVENTS.validate_python(e) for e in events]
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for event in parsed:
        state.handle_event(event)
    return parsed


def test_text_stream_is_the_real_apis_sequence() -> None:
    events = parse_sse(encoder().encode(TEXT))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    check_well_formed(events)
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["model"] == "deepseek-chat"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 20 and final["usage"]["input_tokens_details"]["cached_tokens"] == 8
    assert final["usage"]["output_tokens"] == 9 and final["usage"]["total_tokens"] == 29


def test_reasoning_text_and_two_calls_stream_as_four_items() -> None:
    events = parse_sse(encoder().encode(MIXED))
    check_well_formed(events)
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][2]["arguments"] == "{\"city\":\"Paris\"}" and final["output"][2]["call_id"] == "call_1"
    assert final["output"][3]["name"] == "time"
    kinds = [e["type"] for e in events]
    assert kinds.count("response.function_call_arguments.delta") == 3
    assert kinds.count("response.function_call_arguments.done") == 2
    assert "response.reasoning_text.delta" in kinds


def test_length_ends_with_response_incomplete() -> None:
    events = parse_sse(encoder().encode(CUT))
    check_well_formed(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_batching_does_not_change_the_bytes() -> None:
    one = encoder()
    whole = one.encode(MIXED)
    other = encoder()
    pieces = b"".join(other.encode([p]) for p in MIXED)
    assert pieces == whole


def test_stream_ended_without_done_is_completed_by_finish_with_metered_usage() -> None:
    enc = encoder()
    body = enc.encode(TEXT[:4]) + enc.finish(Usage(5, 0, 2, source="estimated"))
    events = parse_sse(body)
    check_well_formed(events)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["input_tokens"] == 5
    assert enc.finish() == b"" and enc.fail("late") == b""  # nothing after a terminal event


@pytest.mark.parametrize("stream", [TEXT, MIXED, CUT], ids=["text", "mixed", "cut"])
def test_every_prefix_then_a_failure_is_a_well_formed_stream(stream: list[bytes]) -> None:
    for k in range(len(stream) + 1):
        enc = encoder()
        body = enc.encode(stream[:k]) + enc.fail("upstream deepseek failed mid-stream (timeout)")
        events = parse_sse(body)
        check_well_formed(events)
        last = events[-1]
        if b"[DONE]" in stream[:k]:
            assert last["type"] != "response.failed"  # the client already had its whole answer
            continue
        assert last["type"] == "response.failed"
        assert last["response"]["status"] == "failed"
        assert last["response"]["error"] == {"code": "server_error",
                                             "message": "upstream deepseek failed mid-stream (timeout)"}
        assert all(item["status"] == "incomplete" for item in last["response"]["output"])


def test_empty_batch_before_any_chunk_sends_nothing() -> None:
    assert encoder().encode([]) == b""


def final_of(stream: list[bytes]) -> dict[str, Any]:
    events = parse_sse(encoder().encode(stream))
    check_well_formed(events)
    return events[-1]["response"]


def test_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    whole = [chunk({"tool_calls": [{"id": "call_a", "type": "function",
                                    "function": {"name": "f", "arguments": "{\"x\":1}"}}]}),
             chunk({"tool_calls": [{"id": "call_b", "type": "function",
                                    "function": {"name": "g", "arguments": "{}"}}]}),
             chunk(finish="tool_calls"), b"[DONE]"]
    calls = final_of(whole)["output"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [("call_a", "f", "{\"x\":1}"),
                                                                           ("call_b", "g", "{}")]


VENDOR_USAGE = [
    ("moonshot: usage inside choices[0] of the last chunk",
     [chunk({"content": "hi"}), orjson.dumps({"id": "c", "model": "moonshot-v1-8k", "choices": [
         {"index": 0, "delta": {}, "finish_reason": "stop",
          "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}]}), b"[DONE]"],
     (11, 0, 2)),
    ("deepseek: cache hits as prompt_cache_hit_tokens",
     [chunk({"content": "hi"}), chunk(finish="stop"),
      chunk(usage={"prompt_tokens": 70, "completion_tokens": 2, "prompt_cache_hit_tokens": 64,
                   "prompt_cache_miss_tokens": 6}, choices=False), b"[DONE]"],
     (70, 64, 2)),
    ("hunyuan: cumulative usage on every chunk, the last one counts",
     [chunk({"content": "a"}, usage={"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}),
      chunk({"content": "b"}, usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}),
      chunk(finish="stop", usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}), b"[DONE]"],
     (9, 0, 3)),
    ("no usage at all: usage null", [chunk({"content": "hi"}), chunk(finish="stop"), b"[DONE]"], None),
]


@pytest.mark.parametrize("name,stream,expected", VENDOR_USAGE, ids=[v[0] for v in VENDOR_USAGE])
def test_vendor_usage_dialects_end_in_the_responses_usage(name: str, stream: list[bytes],
                                                          expected: tuple[int, int, int] | None) -> None:
    usage = final_of(stream)["usage"]
    if expected is None:
        assert usage is None
        return
    assert (usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"], usage["output_tokens"]) == expected
    assert usage["total_tokens"] == expected[0] + expected[2]


def test_a_vendors_in_band_error_event_ends_the_stream_with_response_failed() -> None:
    enc = encoder()
    events = parse_sse(enc.encode([chunk({"content": "Hel"}),
                                   orjson.dumps({"error": {"message": "model overloaded", "type": "server_error"}}),
                                   chunk({"content": "lo"}), b"[DONE]"]))
    check_well_formed(events)
    assert events[-1]["type"] == "response.failed" and enc.done
    assert "model overloaded" in events[-1]["response"]["error"]["message"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hel"  # nothing after the error
