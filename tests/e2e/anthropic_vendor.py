"""A small loopback vendor speaking Anthropic's Messages API (`POST /v1/messages`), for end-to-end tests.

Deterministic: it answers with a tool call when tools are offered and the conversation has no tool result yet,
else with a fixed text (quoting the tool result when there is one). Usage is fixed and includes prompt-cache
reads and writes, reported as Anthropic does (input_tokens excludes both). `control` makes the next requests
fail with a status (529 overloaded, ...) or cuts a stream after N events with an `error` event.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

USAGE = {"input_tokens": 21, "cache_read_input_tokens": 128, "cache_creation_input_tokens": 64, "output_tokens": 9}
TEXT = "Hello from the Anthropic-format vendor."


@dataclass
class VendorState:
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_statuses: list[int] = field(default_factory=list)  # one per coming request
    cut_after: int | None = None  # stream: an `error` event after this many events

    def reset(self) -> None:
        self.bodies.clear()
        self.headers.clear()
        self.fail_statuses.clear()
        self.cut_after = None


def _content(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if results:
        quoted = results[0]["content"] if isinstance(results[0]["content"], str) else "?"
        return [{"type": "text", "text": f"The tool said: {quoted}"}]
    if body.get("tools"):
        tool = body["tools"][0]
        return [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_e2e_1", "name": tool["name"], "input": {"city": "Paris"}}]
    return [{"type": "text", "text": TEXT}]


def _message(body: dict[str, Any]) -> dict[str, Any]:
    content = _content(body)
    stop = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {"id": "msg_e2e_1", "type": "message", "role": "assistant", "model": body["model"], "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": dict(USAGE)}


def _events(message: dict[str, Any]) -> list[dict[str, Any]]:
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**USAGE, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            words = block["text"].split(" ")
            for j, word in enumerate(words):
                piece = word if j == len(words) - 1 else word + " "
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "text_delta", "text": piece}})
        else:
            events.append({"type": "content_block_start", "index": i,
                           "content_block": {**block, "input": {}}})
            raw = orjson.dumps(block["input"]).decode()
            for piece in (raw[:5], raw[5:]):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta", "partial_json": piece}})
        events.append({"type": "content_block_stop", "index": i})
    events.append({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                   "usage": {"output_tokens": USAGE["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


def sse(events: list[dict[str, Any]]) -> Iterator[bytes]:
    for e in events:
        yield b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"


def make_app(state: VendorState) -> Starlette:
    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.bodies.append(body)
        state.headers.append(dict(request.headers))
        if state.fail_statuses:
            status = state.fail_statuses.pop(0)
            kind = "overloaded_error" if status == 529 else "api_error"
            return Response(orjson.dumps({"type": "error", "error": {"type": kind, "message": "vendor trouble"}}),
                            status_code=status, media_type="application/json")
        message = _message(body)
        if not body.get("stream"):
            return Response(orjson.dumps(message), media_type="application/json")
        events = _events(message)
        if state.cut_after is not None:
            events = events[: state.cut_after] + [{"type": "error", "error": {"type": "overloaded_error",
                                                                               "message": "Overloaded"}}]
        return StreamingResponse(sse(events), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


class AnthropicVendorThread:
    def __init__(self) -> None:
        self.state = VendorState()
        config = uvicorn.Config(make_app(self.state), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AnthropicVendorThread:
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                break
            threading.Event().wait(0.025)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
