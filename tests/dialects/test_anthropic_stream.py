"""Anthropic event streams <-> chat chunks, both directions, including every cut of a vendor stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from gateway.dialects.anthropic_stream import ChunksFromEvents, MessagesEncoder, native_usage
from gateway.domain import Usage
from gateway.metering import StreamMeter
from gateway.providers.base import UpstreamFailure


def ev(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


START = ev({"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x", "stop_reason": None,
    "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 30,
                                     "cache_creation_input_tokens": 8}}})
VENDOR_EVENTS = [
    START,
    ev({"type": "ping"}),
    ev({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    ev({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "let me see"}}),
    ev({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
    ev({"type": "content_block_stop", "index": 0}),
    ev({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
    ev({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking "}}),
    ev({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "the weather."}}),
    ev({"type": "content_block_stop", "index": 1}),
    ev({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1",
                                                                     "name": "get_weather", "input": {}}}),
    ev({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}}),
    ev({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
    ev({"type": "content_block_stop", "index": 2}),
    ev({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 25}}),
    ev({"type": "message_stop"}),
]


def chat_chunks(events: list[bytes], json_tool: str | None = None) -> list[bytes]:
    return ChunksFromEvents(json_tool).feed_batch(events)


def parse_sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Parse SSE the way the Anthropic SDK does: `event:` and `data:` lines, dispatched at a blank line."""
    out = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        assert set(lines) == {b"event", b"data"}, frame
        payload = orjson.loads(lines[b"data"])
        assert payload["type"] == lines[b"event"].decode()
        out.append((lines[b"event"].decode(), payload))
    return out


def test_vendor_events_become_chat_chunks_ending_with_usage_and_done() -> None:
    chunks = chat_chunks(VENDOR_EVENTS)
    assert chunks[-1] == b"[DONE]"
    objs = [orjson.loads(c) for c in chunks[:-1]]
    deltas = [o["choices"][0]["delta"] for o in objs if o["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "let me see"
    assert "".join(d.get("content") or "" for d in deltas) == "Checking the weather."
    calls = [c for d in deltas for c in d.get("tool_calls", ())]
    assert calls[0] == {"index": 0, "id": "toolu_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert [o["choices"][0]["finish_reason"] for o in objs if o["choices"]][-1] == "tool_calls"
    assert objs[-1]["choices"] == [] and objs[-1]["usage"] == {
        "prompt_tokens": 50, "completion_tokens": 25, "total_tokens": 75, "prompt_tokens_details": {"cached_tokens": 30},
        "cache_creation_input_tokens": 8}
    assert all(o["id"] == "msg_1" and o["model"] == "claude-x" for o in objs)


def test_forced_json_tool_streams_as_content() -> None:
    events = [START,
              ev({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t",
                                                                               "name": "answer", "input": {}}}),
              ev({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta",
                                                                       "partial_json": '{"x": 1}'}}),
              ev({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
              ev({"type": "message_stop"})]
    objs = [orjson.loads(c) for c in chat_chunks(events, "answer")[:-1]]
    assert "".join(o["choices"][0]["delta"].get("content") or "" for o in objs if o["choices"]) == '{"x": 1}'
    assert not any(o["choices"] and "tool_calls" in o["choices"][0]["delta"] for o in objs)
    assert objs[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("error_type,kind", [("overloaded_error", "http_5xx"), ("rate_limit_error", "rate_limited"),
                                             ("weird", "bad_response")])
def test_vendor_error_event_mid_stream_is_an_upstream_failure(error_type: str, kind: str) -> None:
    chunks = ChunksFromEvents()
    chunks.feed(START)
    with pytest.raises(UpstreamFailure) as info:
        chunks.feed(ev({"type": "error", "error": {"type": error_type, "message": "busy"}}))
    assert info.value.kind == kind


def test_vendor_garbage_mid_stream_is_a_bad_response() -> None:
    with pytest.raises(UpstreamFailure) as info:
        ChunksFromEvents().feed(b"{not json")
    assert info.value.kind == "bad_response"


def test_full_stream_round_trips_to_the_anthropic_sdk_message() -> None:
    """Vendor events -> chat chunks -> client events: the SDK accumulates the same message the vendor sent."""
    encoder = MessagesEncoder()
    events = parse_sse(encoder.encode(chat_chunks(VENDOR_EVENTS)))
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    for _, payload in events:
        snapshot = accumulate_event(event=payload, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert [b.type for b in snapshot.content] == ["thinking", "text", "tool_use"]
    assert snapshot.content[0].thinking == "let me see"
    assert snapshot.content[1].text == "Checking the weather."
    assert snapshot.content[2].input == {"city": "Paris"} and snapshot.content[2].id == "toolu_1"
    assert snapshot.stop_reason == "tool_use"
    assert (snapshot.usage.input_tokens, snapshot.usage.cache_read_input_tokens,
            snapshot.usage.cache_creation_input_tokens, snapshot.usage.output_tokens) == (12, 30, 8, 25)


def _well_formed(events: list[tuple[str, dict[str, Any]]]) -> None:
    """message_start first; blocks start, get deltas at their own index and stop in order; nothing after the end."""
    assert events[0][0] == "message_start"
    open_index = None
    started = 0
    for name, payload in events[1:-1]:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == started
            open_index, started = payload["index"], started + 1
        elif name == "content_block_delta":
            assert payload["index"] == open_index
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            open_index = None
        else:
            assert name == "message_delta"


@pytest.mark.parametrize("cut", range(len(VENDOR_EVENTS)))
def test_a_vendor_stream_cut_at_every_point_gives_a_well_formed_stream_ending_in_error(cut: int) -> None:
    """Each prefix of the vendor's events, then a failure: a valid client stream whose last event is `error`,
    and the metered usage is what the vendor reported so far (the row is billed from it)."""
    chunks = chat_chunks(VENDOR_EVENTS[: cut + 1])
    meter = StreamMeter(client_wants_usage=True)
    encoder = MessagesEncoder()
    body = b""
    for chunk in chunks:
        meter.feed(chunk)
        body += encoder.feed(chunk)
    if cut + 1 < len(VENDOR_EVENTS):
        body += encoder.fail("upstream failed mid-stream", "timeout")
        events = parse_sse(body)
        assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error",
                                                                   "message": "upstream failed mid-stream"}})
        assert meter.usage is None  # the vendor's usage comes at message_stop: billed from the local count
    else:
        events = parse_sse(body)
        assert events[-1][0] == "message_stop"
        assert meter.usage is not None and meter.usage.output_tokens == 25
    _well_formed(events)
    assert encoder.fail("again") == b""  # nothing after the end


OPENAI_CHUNKS = [
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"q":1}'}}]}}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c1", "model": "deepseek-chat", "choices": [], "usage": {
        "prompt_tokens": 40, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 32}}},
]


def test_openai_vendor_chunks_become_the_anthropic_event_sequence() -> None:
    encoder = MessagesEncoder(model="auto")
    body = encoder.encode([orjson.dumps(c) for c in OPENAI_CHUNKS] + [b"[DONE]"])
    events = parse_sse(body)
    _well_formed(events)
    assert [n for n, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[0][1]["message"]["id"] == "msg_c1" and events[0][1]["message"]["model"] == "auto"
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                             "usage": {"input_tokens": 8, "output_tokens": 9, "cache_creation_input_tokens": 0,
                                       "cache_read_input_tokens": 32}}
    assert encoder.feed(b"[DONE]") == b""


def test_encoder_end_without_done_uses_the_metered_usage() -> None:
    encoder = MessagesEncoder()
    encoder.feed(orjson.dumps(OPENAI_CHUNKS[1]))
    events = parse_sse(encoder.finish(Usage(3, 0, 2, source="estimated")))
    assert [n for n, _ in events] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[1][1]["usage"]["input_tokens"] == 3 and events[1][1]["delta"]["stop_reason"] == "end_turn"


def test_native_usage_takes_message_start_then_cumulative_message_delta() -> None:
    assert native_usage(VENDOR_EVENTS) == Usage(12, 30, 25, cache_write_tokens=8)
    later = ev({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"input_tokens": 13, "output_tokens": 30, "cache_read_input_tokens": None}})
    assert native_usage([START, later]) == Usage(13, 30, 30, cache_write_tokens=8)
    assert native_usage([ev({"type": "ping"})]) is None


def test_forced_json_tool_stream_drops_prose_around_the_json() -> None:
    events = [START,
              ev({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
              ev({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sure: "}}),
              ev({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t",
                                                                               "name": "answer", "input": {}}}),
              ev({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                                       "partial_json": "{}"}}),
              ev({"type": "message_stop"})]
    objs = [orjson.loads(c) for c in chat_chunks(events, "answer")[:-1]]
    assert "".join(o["choices"][0]["delta"].get("content") or "" for o in objs if o["choices"]) == "{}"


def test_tool_calls_ended_with_finish_reason_stop_still_stop_for_tool_use() -> None:
    encoder = MessagesEncoder()
    chunks = [OPENAI_CHUNKS[3], OPENAI_CHUNKS[4],
              {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    events = parse_sse(encoder.encode([orjson.dumps(c) for c in chunks] + [b"[DONE]"]))
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
