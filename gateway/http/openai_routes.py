"""The OpenAI-compatible API: thin handlers that read the body and hand it to the pipeline.

The inbound POST routes (one per client dialect, gateway.dialects.ROUTES) are also served by `hot_post`, a raw ASGI endpoint that `GatewayApp` (gateway/app.py)
calls before FastAPI's middleware, routing and dependency machinery (~25 us of CPU per request, measured with
`make bench`). It answers exactly as the FastAPI routes below would: the same pipeline, the same error bodies
and headers (a GatewayError through `error_response`, anything else a 500 `internal_error` in the same format,
as the app's handler for Starlette's ServerErrorMiddleware sends, then re-raised for the server's log). The FastAPI routes stay for the OpenAPI
schema and for anything that calls the router directly.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.responses import Response

from gateway.dialects import DIALECTS, ROUTES
from gateway.errors import BodyTooLarge, GatewayError
from gateway.pipeline import Pipeline
from gateway.streaming import SERVER_SEND

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOT_ROUTES = ROUTES  # path -> inbound API (a key of DIALECTS)

router = APIRouter()


async def read_body(request: Request) -> bytes:
    """The body, refused early (413) when it is over the limit, without reading all of it."""
    limit = request.app.state.services.config.gateway.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Disconnected(Exception):
    pass


async def _read_asgi_body(scope: Scope, receive: Receive, headers: Headers, limit: int) -> bytes:
    """`read_body` on raw ASGI messages."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"request body exceeds {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise _Disconnected()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def hot_post(app: Any, api: str, scope: Scope, receive: Receive, send: Send) -> None:
    """An inbound API's POST route as a raw ASGI endpoint (see the module's docstring)."""
    started = False
    dialect = DIALECTS[api]

    async def tracked_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    scope[SERVER_SEND] = send  # lets a stream's relay read the server's own disconnect flag (gateway/streaming.py)
    try:
        headers = Headers(scope=scope)
        state = app.state
        try:
            raw = await _read_asgi_body(scope, receive, headers, state.services.config.gateway.max_body_bytes)
        except BodyTooLarge as exc:
            response: Response = dialect.error_response(exc)
        else:
            pipeline: Pipeline = state.pipeline
            response = await pipeline.handle(api, raw, headers)
        await response(scope, receive, tracked_send)
    except _Disconnected:
        return
    except GatewayError as exc:
        if started:
            raise
        await dialect.error_response(exc)(scope, receive, send)
    except Exception as exc:
        if not started:  # the client's error shape (500 internal_error, nothing of the exception's text), then the log
            await dialect.error_response(exc)(scope, receive, send)
        raise
    finally:
        # The server's cycle holds the scope, so a bound method of it left in the scope is a reference cycle:
        # ~7 objects per request for the cyclic GC to find (measured: most of its work under load).
        del scope[SERVER_SEND]


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _proxy_route(api: str) -> Callable[[Request], Awaitable[Response]]:
    async def proxy(request: Request) -> Response:
        try:
            raw = await read_body(request)
        except BodyTooLarge as exc:
            return DIALECTS[api].error_response(exc)
        return await _pipeline(request).handle(api, raw, request.headers)

    proxy.__name__ = f"{api}_endpoint"
    return proxy


for _path, _api in ROUTES.items():
    router.add_api_route(_path, _proxy_route(_api), methods=["POST"], response_model=None)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, object]:
    services = request.app.state.services
    created = int(time.time())
    data: list[dict[str, object]] = []
    for name in services.config.routes:
        data.append({"id": name, "object": "model", "created": created, "owned_by": "gateway-route"})
    for model, deployments in services.by_model.items():
        data.append({"id": model, "object": "model", "created": created,
                     "owned_by": ",".join(sorted({d.provider for d in deployments}))})
    return {"object": "list", "data": data}
