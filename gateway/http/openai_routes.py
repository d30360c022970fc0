"""The OpenAI-compatible API: thin handlers that read the body and hand it to the pipeline."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import BodyTooLarge
from gateway.http.errors import error_response
from gateway.pipeline import Pipeline

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


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


async def _proxy(request: Request, mode: str) -> Response:
    try:
        raw = await read_body(request)
    except BodyTooLarge as exc:
        return error_response(exc)
    pipeline = _pipeline(request)
    return await (pipeline.chat(raw, request.headers) if mode == "chat" else pipeline.embeddings(raw, request.headers))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _proxy(request, "chat")


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await _proxy(request, "embedding")


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
