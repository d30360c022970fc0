"""The stream relay as an ASGI response: what the client receives, and how the request is billed however it ends.

The server is played by plain `send`/`receive` callables: one variant exposes uvicorn's `disconnected` flag on
the owner of `send` (what `hot_post` hands over under uvicorn), the other only `http.disconnect` from `receive`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import orjson
import pytest

from gateway.domain import Deployment, Usage
from gateway.dialects.chat import ChatStream
from gateway.providers.base import UpstreamFailure
from gateway.streaming import SERVER_SEND, StreamRelay
from gateway.tokens import TokenCounter

D = Deployment(provider="deepseek", model="deepseek-v2", upstream_model="deepseek-chat", context_window=32_000,
               max_output_tokens=4096, quality=80, capabilities=frozenset())


def chunk(text: str) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]})


USAGE = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})


class FakeMetrics:
    def __init__(self) -> None:
        self.upstream_errors: list[tuple[str, str]] = []

    def record_upstream_error(self, provider: str, kind: str) -> None:
        self.upstream_errors.append((provider, kind))


class FakeServices:
    def __init__(self) -> None:
        self.metrics = FakeMetrics()
        self.tokens = TokenCounter()


class FakeBooks:
    """What the relay needs of RequestBooks; `closed` records how the request was billed."""

    def __init__(self) -> None:
        self.services = FakeServices()
        self.started_perf = time.perf_counter()
        self.prompt_estimate = 9
        self.closed: list[dict[str, Any]] = []

    async def close(self, d: Deployment | None, status: str, outcome: str, **kw: Any) -> None:
        self.closed.append({"status": status, "outcome": outcome, **kw})


class FakeEvents:
    """A vendor stream: batches, an optional failure after them, an optional pause before each batch."""

    def __init__(self, batches: list[list[bytes]], fail: str | Exception | None = None, delay_s: float = 0.0) -> None:
        self._batches = batches
        self._fail = fail
        self._delay_s = delay_s
        self.read = 0
        self.closed = False

    async def _gen(self) -> AsyncIterator[list[bytes]]:
        for b in self._batches:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            self.read += 1
            yield b
        if isinstance(self._fail, Exception):
            raise self._fail
        if self._fail:
            raise UpstreamFailure(self._fail)

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._gen()

    async def aclose(self) -> None:
        self.closed = True


class UvicornLikeCycle:
    """`send` bound to an object with uvicorn's `disconnected` flag; after a disconnect, send is a no-op."""

    def __init__(self, disconnect_after: int | None = None) -> None:
        self.disconnected = False
        self.messages: list[dict[str, Any]] = []
        self._disconnect_after = disconnect_after

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            return
        self.messages.append(message)
        if self._disconnect_after is not None and len(self.messages) >= self._disconnect_after:
            self.disconnected = True


async def start(events: FakeEvents, books: FakeBooks, wants_usage: bool = True) -> StreamRelay:
    """What the pipeline does: read the first batch, then hand the rest to the relay."""
    batches = events.__aiter__()
    first = await batches.__anext__()
    return StreamRelay(books, D, events, batches, first, ChatStream(wants_usage), 1,  # type: ignore[arg-type]
                       {"x-gateway-provider": "deepseek"})


async def never_disconnects() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


async def test_a_stream_is_relayed_in_one_write_per_batch_and_done_ends_the_body_in_the_same_write() -> None:
    events = FakeEvents([[chunk("a"), chunk("b")], [chunk("c")], [USAGE, b"[DONE]"]])
    books, cycle = FakeBooks(), UvicornLikeCycle()
    r = await start(events, books)
    await r({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    kinds = [(m["type"], m.get("more_body")) for m in cycle.messages]
    assert kinds == [("http.response.start", None), ("http.response.body", True), ("http.response.body", True),
                     ("http.response.body", False)]
    assert (b"content-type", b"text/event-stream; charset=utf-8") in cycle.messages[0]["headers"]
    assert body_of(cycle.messages) == b"".join(b"data: " + p + b"\n\n" for p in
                                               [chunk("a"), chunk("b"), chunk("c"), USAGE, b"[DONE]"])
    assert books.closed == [{"status": "success", "outcome": "success", "usage": Usage(11, 0, 3, "provider"),
                             "attempts": 1, "ttft_s": r.ttft_s, "error_kind": None, "wait": False}]
    assert events.closed


async def test_usage_the_client_did_not_ask_for_is_dropped_but_still_billed() -> None:
    events = FakeEvents([[chunk("a")], [USAGE, b"[DONE]"]])
    books, cycle = FakeBooks(), UvicornLikeCycle()
    await (await start(events, books, wants_usage=False))({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    assert b"usage" not in body_of(cycle.messages)
    assert books.closed[0]["usage"] == Usage(11, 0, 3, "provider")


async def test_a_client_gone_by_uvicorns_flag_stops_the_writes_but_the_vendor_is_read_to_the_end_and_billed() -> None:
    events = FakeEvents([[chunk("a")], [chunk("b")], [chunk("c")], [USAGE, b"[DONE]"]])
    books, cycle = FakeBooks(), UvicornLikeCycle(disconnect_after=2)  # the start and the first batch
    await (await start(events, books))({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    assert len(cycle.messages) == 2
    assert events.read == 4 and events.closed
    assert books.closed[0]["status"] == "client_disconnected"
    assert books.closed[0]["usage"] == Usage(11, 0, 3, "provider")


async def test_without_the_flag_a_disconnect_is_learnt_from_receive() -> None:
    events = FakeEvents([[chunk("a")], [chunk("b")], [chunk("c")], [USAGE, b"[DONE]"]], delay_s=0.02)
    books = FakeBooks()
    sent: list[dict[str, Any]] = []
    left = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:  # a plain function: no server object to read a flag from
        sent.append(message)
        if len(sent) == 2:
            left.set()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    await (await start(events, books))({}, receive, send)
    assert len(sent) < 5, "writes stopped once the client was known to be gone"
    assert events.read == 4
    assert books.closed[0]["status"] == "client_disconnected"
    assert books.closed[0]["usage"] == Usage(11, 0, 3, "provider")


async def test_a_send_that_raises_means_the_client_is_gone_and_billing_goes_on() -> None:
    events = FakeEvents([[chunk("a")], [chunk("b")], [USAGE, b"[DONE]"]])
    books = FakeBooks()
    calls = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("connection reset")  # what an ASGI spec 2.4 server does

    await (await start(events, books))({}, never_disconnects, send)
    assert calls == 2
    assert events.read == 3
    assert books.closed[0]["status"] == "client_disconnected"


async def test_a_vendor_failing_mid_stream_ends_the_body_with_an_error_event_and_no_done() -> None:
    events = FakeEvents([[chunk("a")], [chunk("b")]], fail="connect")
    books, cycle = FakeBooks(), UvicornLikeCycle()
    await (await start(events, books))({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    body = body_of(cycle.messages)
    assert b"[DONE]" not in body
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert orjson.loads(last[len(b"data: "):])["error"]["code"] == "upstream_stream_error"
    assert cycle.messages[-1]["more_body"] is False
    closed = books.closed[0]
    assert (closed["status"], closed["outcome"], closed["error_kind"]) == ("stream_error", "upstream_error", "connect")
    assert closed["usage"].source == "estimated" and closed["usage"].output_tokens > 0
    assert books.services.metrics.upstream_errors == [("deepseek", "connect")]


async def test_output_after_done_is_still_billed_though_the_client_body_has_ended() -> None:
    late_usage = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}})
    events = FakeEvents([[chunk("a"), b"[DONE]"], [late_usage]])
    books, cycle = FakeBooks(), UvicornLikeCycle()
    await (await start(events, books))({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    assert cycle.messages[-1]["more_body"] is False and b"[DONE]" in cycle.messages[-1]["body"]
    assert len(cycle.messages) == 2  # nothing is written after the end of the body
    assert books.closed[0]["usage"] == Usage(11, 0, 7, "provider")


@pytest.mark.parametrize("failure", ["connect", RuntimeError("a vendor breaking its protocol after the end")])
async def test_a_vendor_failing_after_done_leaves_the_request_a_success_billed_at_the_vendors_usage(
        failure: str | Exception) -> None:
    events = FakeEvents([[chunk("a"), USAGE, b"[DONE]"]], fail=failure)
    books, cycle = FakeBooks(), UvicornLikeCycle()
    await (await start(events, books))({SERVER_SEND: cycle.send}, never_disconnects, cycle.send)
    assert body_of(cycle.messages).endswith(b"data: [DONE]\n\n") and cycle.messages[-1]["more_body"] is False
    closed = books.closed[0]
    assert (closed["status"], closed["outcome"], closed["error_kind"]) == ("success", "success", None)
    assert closed["usage"] == Usage(11, 0, 3, "provider")
    assert books.services.metrics.upstream_errors == []


async def test_a_relay_cancelled_mid_stream_bills_what_it_metered_and_closes_the_vendor() -> None:
    events = FakeEvents([[chunk("a")], [chunk("b")], [chunk("c")], [USAGE, b"[DONE]"]], delay_s=0.2)
    books, cycle = FakeBooks(), UvicornLikeCycle()
    r = await start(events, books)
    task = asyncio.create_task(r({SERVER_SEND: cycle.send}, never_disconnects, cycle.send))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events.closed
    closed = books.closed[0]
    assert closed["status"] == "interrupted"
    assert closed["usage"].source == "estimated" and closed["usage"].output_tokens > 0
