"""`POST /v1/messages/count_tokens` (Anthropic Messages API). `POST /v1/messages` itself is an inbound dialect
route on the one pipeline (gateway/dialects/messages.py, registered in gateway.dialects.ROUTES).

The count is the gateway's own estimate (gateway/tokens.py) over the same canonical request the router ranks: the
number budgets and context-window checks use, not any one vendor's tokenizer. No vendor is called, nothing is
billed; the caller's key is checked as for any request, and the model must be a route or a deployed model.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from gateway.dialects.messages import MESSAGES, count_tokens
from gateway.errors import ClientError, StateUnavailable
from gateway.http.openai_routes import read_body
from gateway.pipeline import Pipeline

router = APIRouter()


@router.post("/v1/messages/count_tokens")
async def messages_count_tokens(request: Request) -> Response:
    pipeline: Pipeline = request.app.state.pipeline
    try:
        raw = await read_body(request)
        await pipeline.authorise(request.headers, "count_tokens")  # no work for a caller without a valid key
        parsed, tokens = count_tokens(raw, request.headers, request.app.state.services.tokens)
        pipeline.resolve(parsed.facts)
    except (ClientError, StateUnavailable) as exc:
        return MESSAGES.error_response(exc)
    return JSONResponse({"input_tokens": tokens})
