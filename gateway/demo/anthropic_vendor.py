"""A simulated vendor's Anthropic-format endpoint: `POST {anthropic_path}/v1/messages` (+ `/count_tokens`).

Served beside the vendor's OpenAI-format API by the same server, sharing its key, control modes, counters and
models. The key is accepted as `x-api-key` or as a bearer token. The prompt cache here is Anthropic's explicit
kind (`cache_control` breakpoints, see `prompt_cache`), kept apart from the automatic one: DeepSeek's real
endpoint ignores `cache_control` and applies its automatic cache, but the simulation gives the gateway a vendor
that reports `cache_creation_input_tokens`, the direction Anthropic itself and DashScope's explicit cache bill.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.demo import anthropic_format as fmt
from gateway.demo import answers
from gateway.demo.control import DroppedConnection
from gateway.demo.dialects import ErrorKind, error_body
from gateway.demo.prompt_cache import CachePolicy, PrefixCache

if TYPE_CHECKING:
    from gateway.demo.vendor_app import VendorServer

# Anthropic's prompt caching: breakpoints of at least 1,024 tokens (Sonnet/Opus), 5-minute TTL refreshed on use.
ANTHROPIC_CACHE = CachePolicy(block_tokens=1, min_tokens=1024, ttl_s=300)
_STREAM_PAUSE_EVERY = 3  # events between yields to the loop


class AnthropicEndpoint:
    def __init__(self, server: VendorServer, path: str, policy: CachePolicy | None) -> None:
        self.server = server
        self.cache = PrefixCache(policy) if policy is not None else None
        p = path.rstrip("/")
        self.routes = [
            Route(f"{p}/v1/messages", self.messages, methods=["POST"]),
            Route(f"{p}/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
        ]

    def error(self, kind: ErrorKind, request_id: str, **values: Any) -> Response:
        spec = self.server.spec
        # The message text is the vendor's own (naming the account on 401/402, as the OpenAI-format one does).
        _, native = error_body(spec.dialect, kind, request_id, account=spec.account_id, **values)
        message = values.get("message") or native["error"]["message"]
        status, body = fmt.error_body(kind, message, request_id)
        headers = {"Retry-After": "1"} if status == 429 else None
        return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)

    def _authorized(self, request: Request) -> bool:
        key = self.server.spec.api_key
        return request.headers.get("x-api-key") == key or request.headers.get("authorization") == f"Bearer {key}"

    def _model(self, body: dict[str, Any], rid: str) -> Any:
        """The model served; as DeepSeek does, `claude*` names map to its chat model and other unknown names are
        a 400 (api-docs.deepseek.com/guides/anthropic_api)."""
        name = body.get("model")
        model = self.server.spec.model(name) if isinstance(name, str) else None
        if model is None and isinstance(name, str) and name.startswith("claude"):
            model = next((m for m in self.server.spec.models if m.mode == "chat"), None)
        if model is None or model.mode != "chat":
            return self.error("bad_request", rid, message=f"model: unsupported model {name!r}")
        return model

    async def count_tokens(self, request: Request) -> Response:
        body, rid, _, _, refusal = await self.server.begin(request, "count_tokens", self.error,
                                                           self._authorized(request))
        if refusal is not None:
            return refusal
        try:
            fmt.validate({**body, "max_tokens": 1})
        except fmt.BadMessagesRequest as e:
            return self.error("bad_request", rid, message=str(e))
        model = self._model(body, rid)
        if isinstance(model, Response):
            return model
        pieces, _ = fmt.prompt_pieces(body)
        return Response(orjson.dumps({"input_tokens": len(pieces)}), media_type="application/json")

    async def messages(self, request: Request) -> Response:
        body, rid, mode, delay_s, refusal = await self.server.begin(request, "messages", self.error,
                                                                    self._authorized(request))
        if refusal is not None:
            return refusal
        try:
            fmt.validate(body)
        except fmt.BadMessagesRequest as e:
            return self.error("bad_request", rid, message=str(e))
        model = self._model(body, rid)
        if isinstance(model, Response):
            return model
        max_tokens: int = body["max_tokens"]
        if model.max_output_tokens is not None and max_tokens > model.max_output_tokens:
            return self.error("bad_request", rid, message=f"max_tokens: {max_tokens} > {model.max_output_tokens}, "
                              "which is the maximum allowed number of output tokens for " + model.name)
        pieces, breakpoints = fmt.prompt_pieces(body)
        if len(pieces) + max_tokens > model.context_window:
            return self.error("context", rid, message=f"prompt is too long: {len(pieces) + max_tokens} tokens > "
                              f"{model.context_window} maximum")
        try:
            answer = answers.decide(fmt.chat_view(body), model.name, rid, max_tokens)
        except answers.BadToolRequest as e:
            return self.error("bad_request", rid, message=str(e))
        answer, stop_sequence = fmt.apply_stop_sequences(answer, body.get("stop_sequences"))
        read, written = self.cache.explicit(pieces, breakpoints, model.name) if self.cache else (0, 0)
        usage = None if mode == "no_usage" else fmt.usage(len(pieces) - read - written, read, written,
                                                           answer.output_tokens)
        mid = f"msg_{rid}"
        if body.get("stream") is True:
            events = self._stream(fmt.stream_events(mid, model.name, answer, stop_sequence, usage), mode, delay_s)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return self.server.finish_body(mode, 200, fmt.message(mid, model.name, answer, stop_sequence, usage))

    async def _stream(self, events: Any, mode: str, delay_s: float) -> AsyncIterator[bytes]:
        listed: list[dict[str, Any]] = list(events)
        deltas = [i for i, e in enumerate(listed) if e["type"] == "content_block_delta"]
        cut = deltas[len(deltas) // 2] if deltas else len(listed) // 2
        for i, event in enumerate(listed):
            if mode == "drop_mid_stream" and i == cut:
                raise DroppedConnection("drop_mid_stream")
            if mode == "error_mid_stream" and i == cut:  # Anthropic's `event: error` after the first byte
                yield fmt.sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                return
            if mode == "slow_stream" and event["type"] == "content_block_delta":
                await self.server.sleep(delay_s)
            yield fmt.sse(event)
            if i % _STREAM_PAUSE_EVERY == 0:
                await asyncio.sleep(0)

