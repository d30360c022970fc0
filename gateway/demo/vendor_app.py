"""One generic simulated vendor: a Starlette app that speaks the OpenAI-compatible API in a given dialect.

Per request: count it, check the key, act out the control mode, validate the body the way a vendor does
(unknown model 404, prompt over the context window 400), then answer deterministically (see `textsim`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Literal, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.demo import answers, textsim
from gateway.demo.anthropic_vendor import ANTHROPIC_CACHE, AnthropicEndpoint
from gateway.demo.control import DroppedConnection, VendorControl, VendorStats
from gateway.demo.dialects import Dialect, ErrorKind, echoed_model, error_body, usage_body
from gateway.demo.prompt_cache import CachePolicy, PrefixCache

_MAX_STREAM_CHUNKS = 8  # content chunks per streamed reply: several, never hundreds
_TIMEOUT_HANG_S = 300.0  # `timeout` without delay_s hangs this long at most (or until the server stops)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name the vendor serves (a deployment's upstream_model)
    context_window: int
    max_output_tokens: int | None = None
    mode: Literal["chat", "embedding"] = "chat"


@dataclass(frozen=True)
class VendorSpec:
    provider: str
    path: str  # api_base path, e.g. "/api/v3"; endpoints are served under it
    api_key: str
    models: tuple[ModelSpec, ...]
    dialect: Dialect
    cache: CachePolicy | None | Literal["dialect"] = "dialect"  # the prompt cache; "dialect": the vendor's own
    # Where it also serves the Anthropic Messages format ("dialect": the vendor's own, e.g. DeepSeek /anthropic).
    anthropic_path: str | None | Literal["dialect"] = "dialect"
    anthropic_cache: CachePolicy | None = ANTHROPIC_CACHE  # its explicit cache; None = it caches nothing
    aliases: tuple[str, ...] = ()  # other provider names the config gives this vendor (its anthropic-style twin)

    @property
    def cache_policy(self) -> CachePolicy | None:
        return self.dialect.cache if self.cache == "dialect" else self.cache

    @property
    def anthropic_base(self) -> str | None:
        """The Anthropic-format base path (clients post to `{base}/v1/messages`), or None."""
        return self.dialect.anthropic_path if self.anthropic_path == "dialect" else self.anthropic_path

    @property
    def account_id(self) -> str:
        """Appears in this vendor's 401/402/403 bodies; the gateway must never relay it to a client."""
        return f"demo-{self.provider}-acct-7741"

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


class ErrorRenderer(Protocol):
    def __call__(self, kind: ErrorKind, request_id: str, **values: Any) -> Response: ...


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _DroppingResponse(Response):
    """Promises the whole body (Content-Length), sends half of it, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise DroppedConnection("drop_mid_stream")


class VendorServer:
    """State and handlers of one simulated vendor; `app` is its ASGI application."""

    def __init__(self, spec: VendorSpec) -> None:
        self.spec = spec
        self.control = VendorControl()
        self.stats = VendorStats()
        policy = spec.cache_policy
        self.cache = PrefixCache(policy) if policy is not None else None
        self._ids = itertools.count(1)
        self._closing: asyncio.Event | None = None
        p = spec.path.rstrip("/")
        base = spec.anthropic_base
        self.anthropic = AnthropicEndpoint(self, base, spec.anthropic_cache) if base is not None else None
        self.app = Starlette(
            routes=[*(self.anthropic.routes if self.anthropic else ()),
                Route(f"{p}/chat/completions", self._chat, methods=["POST"]),
                Route(f"{p}/embeddings", self._embeddings, methods=["POST"]),
                Route(f"{p}/models", self._models, methods=["GET"]),
                Route("/_control", self._control, methods=["GET", "POST"]),
                Route("/_stats", self._stats, methods=["GET"]),
                Route("/_reset", self._reset, methods=["POST"]),
                Route("/_cache", self._cache, methods=["GET", "POST"]),
            ]
        )

    def bind_loop(self) -> None:
        """Called on the serving loop: lets `timeout`/`slow` sleeps end at once when the server stops."""
        self._closing = asyncio.Event()

    def close(self) -> None:
        if self._closing is not None:
            self._closing.set()

    def reset(self) -> None:
        self.control.set("ok")
        self.stats.reset()
        if self.cache is not None:
            self.cache.clear()
        if self.anthropic is not None and self.anthropic.cache is not None:
            self.anthropic.cache.clear()

    # --- helpers -------------------------------------------------------------------------------------

    def _error(self, kind: ErrorKind, request_id: str, **values: Any) -> Response:
        status, body = error_body(self.spec.dialect, kind, request_id, account=self.spec.account_id, **values)
        headers = {"Retry-After": "1"} if status == 429 else None
        return _json(status, body, headers)

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {self.spec.api_key}"

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._closing is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _act_out(self, mode: str, delay_s: float, request_id: str, error: ErrorRenderer) -> Response | None:
        """An error response for the failure modes; waits for `slow`; None means go on and answer."""
        if mode == "timeout":
            await self.sleep(delay_s or _TIMEOUT_HANG_S)
            return error("timeout", request_id)
        if mode != "slow_stream":
            await self.sleep(delay_s)  # `slow`, and error modes answer late too when given a delay
        errors: dict[str, ErrorKind] = {
            "error_500": "server", "error_429": "rate_limit", "error_401": "account", "error_400": "bad_request",
            "error_529": "overloaded",
        }
        if mode in errors:
            return error(errors[mode], request_id, detail="Invalid request: simulated bad request (error_400)")
        return None

    async def begin(self, request: Request, endpoint: str, error: ErrorRenderer | None = None,
                    authorized: bool | None = None) -> tuple[Any, str, str, float, Response | None]:
        """Read and count the request, check its key, act out the mode: (body, request id, mode, delay, refusal).

        `error` renders a refusal (default: this vendor's OpenAI-format dialect); `authorized` overrides the
        bearer-key check (the Anthropic endpoint also takes `x-api-key`).
        """
        error = error or self._error
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.stats.record(endpoint, body, request.headers)
        request_id = f"{self.spec.provider}-{next(self._ids):06d}"
        if not (self._authorized(request) if authorized is None else authorized):
            return body, request_id, "ok", 0.0, error("auth", request_id)
        mode, delay_s = self.control.take()
        refusal = await self._act_out(mode, delay_s, request_id, error)
        if refusal is None and not isinstance(body, dict):
            refusal = error("bad_request", request_id, detail="Request body is not a valid JSON object")
        return body, request_id, mode, delay_s, refusal

    def _check_model(self, body: dict[str, Any], request_id: str, mode: str) -> ModelSpec | Response:
        name = body.get("model")
        model = self.spec.model(name) if isinstance(name, str) else None
        if model is None:
            return self._error("model_not_found", request_id, model=name)
        if model.mode != mode:
            return self._error("bad_request", request_id, detail=f"model {name} does not support this endpoint")
        return model

    def finish_body(self, mode: str, status: int, body: dict[str, Any]) -> Response:
        if mode == "drop_mid_stream":
            return _DroppingResponse(orjson.dumps(body), status_code=status, media_type="application/json")
        return _json(status, body)

    # --- endpoints -----------------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        body, rid, mode, delay_s, refusal = await self.begin(request, "chat")
        if refusal is not None:
            return refusal
        model = self._check_model(body, rid, "chat")
        if isinstance(model, Response):
            return model
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return self._error("bad_request", rid, detail="messages must be a non-empty array of objects")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
            return self._error("bad_request", rid, detail="max_tokens must be a positive integer")
        if max_tokens is not None and model.max_output_tokens is not None and max_tokens > model.max_output_tokens:
            return self._error(
                "bad_request", rid,
                detail=f"Invalid max_tokens value, the valid range of max_tokens is [1, {model.max_output_tokens}]",
            )
        pieces, extra = textsim.prompt_pieces(messages, body.get("tools"), body.get("response_format"))
        prompt_tokens = len(pieces) + extra
        if prompt_tokens + (max_tokens or 0) > model.context_window:
            return self._error("context", rid, limit=model.context_window, tokens=prompt_tokens + (max_tokens or 0))
        try:
            answer = answers.decide(body, model.name, rid, max_tokens)
        except answers.BadToolRequest as e:
            return self._error("bad_request", rid, detail=str(e))
        cached = self.cache.lookup_and_store(pieces, model.name) if self.cache is not None else 0
        n_out = answer.output_tokens
        usage = None if mode == "no_usage" else usage_body(self.spec.dialect, prompt_tokens, n_out, cached)
        shown_model = echoed_model(self.spec.dialect, model.name)
        if body.get("stream") is True:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
            chunks = self._stream(f"chatcmpl-{rid}", shown_model, answer, usage, include_usage, mode, delay_s,
                                  prompt_tokens)
            return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result: dict[str, Any] = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": shown_model,
            "choices": [{"index": 0, "message": answers.message(answer), "logprobs": None,
                         "finish_reason": answer.finish}],
        }
        if usage is not None:
            result["usage"] = usage
        return self.finish_body(mode, 200, result)

    async def _stream(
        self, cid: str, model: str, answer: answers.Answer, usage: dict[str, Any] | None,
        include_usage: bool, mode: str, delay_s: float, prompt_tokens: int,
    ) -> AsyncIterator[bytes]:
        dialect = self.spec.dialect
        created = int(time.time())
        # OpenAI-style vendors put "usage": null on every chunk once the client asked for usage.
        null_usage = dialect.stream_usage == "final_usage_chunk" and include_usage and usage is not None
        cumulative = dialect.stream_usage == "every_chunk" and usage is not None
        cached = _cached_of(usage) if usage is not None else 0

        def chunk(delta: dict[str, Any], finish_reason: str | None, done_tokens: int) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if null_usage:
                c["usage"] = None
            elif cumulative:
                c["usage"] = usage_body(dialect, prompt_tokens, done_tokens, cached)
            return c

        if dialect.keepalive:
            yield b": keep-alive\n\n"
        yield _sse(chunk({"role": "assistant", "content": None if answer.tool_calls else ""}, None, 0))
        deltas = answers.stream_deltas(answer, _MAX_STREAM_CHUNKS)
        for i, (delta, sent) in enumerate(deltas):
            if mode == "drop_mid_stream" and i == len(deltas) // 2:
                raise DroppedConnection("drop_mid_stream")
            if mode == "error_mid_stream" and i == len(deltas) // 2:
                # What OpenAI-compatible vendors send when generation fails after the first byte: an error
                # payload in the event stream, and no [DONE].
                yield _sse(error_body(dialect, "overloaded", cid)[1])
                return
            if mode == "slow_stream":
                await self.sleep(delay_s)
            yield _sse(chunk(delta, None, sent))
            if dialect.keepalive and i % 3 == 2:
                yield b"\n: keep-alive\n\n"
            await asyncio.sleep(0)  # a real vendor yields between tokens; so do we, for fairness among streams
        last = chunk({}, answer.finish, answer.output_tokens)
        if usage is not None and dialect.stream_usage == "finish_chunk":
            last["usage"] = usage
        elif usage is not None and dialect.stream_usage == "choice_usage":
            last["choices"][0]["usage"] = usage
        yield _sse(last)
        if usage is not None and dialect.stream_usage == "final_usage_chunk" and include_usage:
            yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    async def _embeddings(self, request: Request) -> Response:
        body, rid, mode, _, refusal = await self.begin(request, "embeddings")
        if refusal is not None:
            return refusal
        model = self._check_model(body, rid, "embedding")
        if isinstance(model, Response):
            return model
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            return self._error("bad_request", rid, detail="input must be a string, an array of strings or of tokens")
        counts = [len(t) if isinstance(t, list) else textsim.count_tokens(t) for t in inputs]
        if max(counts) > model.context_window:
            return self._error("context", rid, limit=model.context_window, tokens=max(counts))
        data = [
            {"object": "embedding", "index": i, "embedding": textsim.embedding_vector(t if isinstance(t, str) else repr(t))}
            for i, t in enumerate(inputs)
        ]
        answer: dict[str, Any] = {"object": "list", "data": data, "model": echoed_model(self.spec.dialect, model.name)}
        if mode != "no_usage":
            answer["usage"] = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return self.finish_body(mode, 200, answer)

    async def _models(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error("auth", f"{self.spec.provider}-models")
        data = [{"id": m.name, "object": "model", "created": 1715731200, "owned_by": self.spec.provider}
                for m in self.spec.models]
        return _json(200, {"object": "list", "data": data})

    async def _control(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.control.set(*VendorControl.parse(orjson.loads(await request.body() or b"{}")))
            except (ValueError, orjson.JSONDecodeError) as e:
                return _json(400, {"error": {"message": str(e), "type": "invalid_request_error", "param": None,
                                             "code": "bad_control"}})
        return _json(200, self.control.snapshot())

    async def _stats(self, request: Request) -> Response:
        return _json(200, self.stats.snapshot())

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return _json(200, {"reset": True})

    async def _cache(self, request: Request) -> Response:
        """GET: the prompt cache's policy and live entries. POST {"clear": true} or {"advance_s": N}."""
        if self.cache is None:
            return _json(200, {"enabled": False})
        if request.method == "POST":
            try:
                order = orjson.loads(await request.body() or b"{}")
                advance = order.get("advance_s", 0) if isinstance(order, dict) else None
                if not isinstance(order, dict) or isinstance(advance, bool) or not isinstance(advance, (int, float)):
                    raise ValueError("expected {\"clear\": true} or {\"advance_s\": seconds}")
            except (ValueError, orjson.JSONDecodeError) as e:
                return _json(400, {"error": {"message": str(e), "type": "invalid_request_error", "param": None,
                                             "code": "bad_control"}})
            if order.get("clear") is True:
                self.cache.clear()
            self.cache.advance(float(advance))
        return _json(200, {"enabled": True, **self.cache.snapshot()})


def _cached_of(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        return int(details.get("cached_tokens", 0))
    return int(usage.get("prompt_cache_hit_tokens", 0))


def _embedding_inputs(value: Any) -> list[str | list[int]] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [list(value)]
    if isinstance(value, list) and value and all(isinstance(v, (str, list)) for v in value):
        return list(value)
    return None
