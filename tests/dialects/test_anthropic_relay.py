"""A Messages stream through the real relay, cut at every point of the vendor's events: the client always gets a
well-formed Anthropic stream ending in an `error` event, and the request is billed once with what was metered.
Both paths: translated (Anthropic vendor -> chat chunks -> Messages client) and pass-through."""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson
import pytest

from gateway.dialects.anthropic_stream import MessagesEncoder, NativeStream
from gateway.dialects.base import ClientStream, EncodedStream
from gateway.domain import Usage
from gateway.providers.anthropic import _TranslatedStream
from gateway.streaming import SERVER_SEND, StreamRelay
from tests.dialects.test_anthropic_stream import VENDOR_EVENTS, _well_formed, parse_sse
from tests.test_streaming import D, FakeBooks, FakeEvents, UvicornLikeCycle, body_of, never_disconnects


async def relay(events: Any, client: ClientStream) -> tuple[bytes, FakeBooks]:
    books, cycle = FakeBooks(), UvicornLikeCycle()
    batches: AsyncIterator[list[bytes]] = events.__aiter__()
    first = await batches.__anext__()
    r = StreamRelay(books, D, events, batches, first, client, 1, {})  # type: ignore[arg-type]
    await r({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    return body_of(cycle.messages), books


def one_event_per_batch(cut: int, fail: str | None = "timeout") -> FakeEvents:
    return FakeEvents([[e] for e in VENDOR_EVENTS[: cut + 1]], fail=fail)


@pytest.mark.parametrize("cut", range(len(VENDOR_EVENTS) - 1))
async def test_translated_stream_cut_at_every_point_ends_in_an_error_event_and_is_billed(cut: int) -> None:
    body, books = await relay(_TranslatedStream(one_event_per_batch(cut), None), EncodedStream(MessagesEncoder()))
    events = parse_sse(body)
    _well_formed(events)
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    [closed] = books.closed
    assert (closed["status"], closed["error_kind"]) == ("stream_error", "timeout")
    assert closed["usage"].source == "estimated"  # the vendor's usage comes only at message_stop


@pytest.mark.parametrize("cut", range(len(VENDOR_EVENTS) - 1))
async def test_pass_through_stream_cut_at_every_point_ends_in_an_error_event_and_is_billed(cut: int) -> None:
    body, books = await relay(one_event_per_batch(cut), NativeStream())
    events = parse_sse(body)
    assert [p for _, p in events[:-1]] == [orjson.loads(e) for e in VENDOR_EVENTS[: cut + 1]]
    _well_formed([e for e in events if e[0] != "ping"])
    assert events[-1][0] == "error"
    [closed] = books.closed
    assert closed["status"] == "stream_error"
    # message_start carries the input and cache counts: billed from the first event on.
    assert closed["usage"] == Usage(12, 30, 1 if cut < 14 else 25, cache_write_tokens=8)


async def test_a_vendor_error_event_mid_batch_keeps_what_came_before_it() -> None:
    error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    for make in (lambda: NativeStream(), lambda: EncodedStream(MessagesEncoder())):
        batch = VENDOR_EVENTS[:9] + [error]
        events_in = FakeEvents([batch])
        client = make()
        source = events_in if isinstance(client, NativeStream) else _TranslatedStream(events_in, None)
        body, books = await relay(source, client)
        events = parse_sse(body)
        assert events[-1] == ("error", {"type": "error", "error": {
            "type": "overloaded_error", "message": "upstream deepseek failed mid-stream (http_5xx)"}})
        text = "".join(p["delta"].get("text", "") for n, p in events if n == "content_block_delta")
        assert text == "Checking the weather."
        assert books.closed[0]["status"] == "stream_error" and books.closed[0]["error_kind"] == "http_5xx"


async def test_a_complete_pass_through_stream_ends_with_message_stop_and_the_vendors_usage() -> None:
    body, books = await relay(FakeEvents([VENDOR_EVENTS[:5], VENDOR_EVENTS[5:]]), NativeStream())
    events = parse_sse(body)
    assert events[-1][0] == "message_stop" and len(events) == len(VENDOR_EVENTS)
    assert books.closed[0]["status"] == "success"
    assert books.closed[0]["usage"] == Usage(12, 30, 25, cache_write_tokens=8)
