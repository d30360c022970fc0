"""A loopback OpenAI-compatible vendor whose answers are fixed and known: every chat completion reports
`PROMPT_TOKENS` in and `COMPLETION_TOKENS` out (streamed or not), every embedding `PROMPT_TOKENS`, so tests can
assert exact usage, costs and tpm. It counts what it received (`requests`, `bodies`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

PROMPT_TOKENS = 300
COMPLETION_TOKENS = 100
STREAM_PIECES = ("Hel", "lo", " from", " the", " loopback", " vendor")


def completion(model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-loop", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(STREAM_PIECES)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}}


def sse_events(model: str) -> list[bytes]:
    """The whole stream, one `data:` event per item ([DONE] last)."""
    base = {"id": "chatcmpl-loop", "object": "chat.completion.chunk", "created": 1, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece},
                                     "finish_reason": None}]} for piece in STREAM_PIECES]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**base, "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS,
                                                    "completion_tokens": COMPLETION_TOKENS,
                                                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


class LoopbackVendor:
    """`with LoopbackVendor() as v:` serves on `v.url` (…/v1) from a thread."""

    def __init__(self) -> None:
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/embeddings", self._embed, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests += 1
            self.bodies.append(body)

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self._record(body)
        if body.get("stream"):
            async def events() -> Any:
                for event in sse_events(body["model"]):
                    yield event
                    await asyncio.sleep(0)
            return StreamingResponse(events(), media_type="text/event-stream")
        return Response(orjson.dumps(completion(body["model"])), media_type="application/json")

    async def _embed(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self._record(body)
        return Response(orjson.dumps({"object": "list", "model": body["model"],
                                      "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                                      "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}}),
                        media_type="application/json")

    def __enter__(self) -> LoopbackVendor:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("loopback vendor failed to start")
            threading.Event().wait(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
