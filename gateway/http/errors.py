"""The ONE map from gateway errors to HTTP statuses and the error bodies of each client dialect.

Every error a client sees goes through `error_response` (or `error_payload` for an SSE error event). The
Anthropic shape (`anthropic_error_response`) is the same status, headers and message, reshaped: its error
type follows from the status as Anthropic's own API assigns them.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gateway import errors as E

_NO_RETRY = {"x-should-retry": "false"}


def _body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_and_body(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI error body, extra headers) for any exception."""
    if isinstance(exc, E.UpstreamRequestError):
        return exc.status, _body(exc.message, "invalid_request_error", exc.code, exc.param), dict(_NO_RETRY)
    if isinstance(exc, E.UpstreamUnavailable):
        status = 504 if exc.timed_out else 502
        return status, _body(str(exc), "upstream_error", "upstream_unavailable"), {}
    if isinstance(exc, E.StateUnavailable):
        return 503, _body(str(exc), "service_unavailable", "state_unavailable"), {"retry-after": "1"}
    if isinstance(exc, E.RateLimited):
        return 429, _body(exc.message, "rate_limit_error", exc.code, exc.param), {"retry-after": str(exc.retry_after)}
    if isinstance(exc, E.BudgetExceeded):
        return 429, _body(exc.message, "insufficient_quota", exc.code, exc.param), dict(_NO_RETRY)
    if isinstance(exc, E.Unauthorized):
        return 401, _body(exc.message, "authentication_error", exc.code, exc.param), {}
    if isinstance(exc, E.ModelNotFound):
        return 404, _body(exc.message, "invalid_request_error", exc.code, exc.param), dict(_NO_RETRY)
    if isinstance(exc, E.NotFound):
        return 404, _body(exc.message, "invalid_request_error", exc.code, exc.param), {}
    if isinstance(exc, E.BodyTooLarge):
        return 413, _body(exc.message, "invalid_request_error", exc.code, exc.param), dict(_NO_RETRY)
    if isinstance(exc, E.HeadersTooLarge):
        return 431, _body(exc.message, "invalid_request_error", exc.code, exc.param), dict(_NO_RETRY)
    if isinstance(exc, E.ClientError):  # BadRequest, NoEligibleDeployment
        return 400, _body(exc.message, "invalid_request_error", exc.code, exc.param), dict(_NO_RETRY)
    # Anything unexpected: never leak its text (it could hold a secret); the request id leads to the log.
    return 500, _body("internal gateway error", "server_error", "internal_error"), {}


def error_response(exc: Exception, headers: dict[str, str] | None = None) -> Response:
    status, body, extra = status_and_body(exc)
    merged = {**(headers or {}), **extra}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=merged)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def http_error_response(status: int, message: str, headers: dict[str, str] | None = None, *,
                        anthropic: bool = False) -> Response:
    """The framework's own refusals (no such path: 404; no such method: 405, with its `Allow` header; any other
    HTTPException) in the same body as everything else (Anthropic's shape on its paths), never `{"detail": ...}`."""
    if status >= 500:
        return (anthropic_error_response if anthropic else error_response)(RuntimeError(message), headers)
    body = anthropic_body(status, message) if anthropic else _body(
        message, "invalid_request_error", _HTTP_CODES.get(status, "invalid_request"))
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={**(headers or {}), **_NO_RETRY})


def error_payload(message: str, code: str, type_: str = "upstream_error") -> bytes:
    """The SSE `{"error": ...}` event that ends a stream which failed after its first byte."""
    return orjson.dumps(_body(message, type_, code))


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors); other 5xx are `api_error`.
_ANTHROPIC_TYPE = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 529: "overloaded_error"}


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPE.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def anthropic_error_response(exc: Exception, headers: dict[str, str] | None = None) -> Response:
    """`error_response` in the Anthropic Messages shape: `{"type": "error", "error": {"type", "message"}}`."""
    status, body, extra = status_and_body(exc)
    merged = {**(headers or {}), **extra}
    return Response(orjson.dumps(anthropic_body(status, body["error"]["message"])), status_code=status,
                    media_type="application/json", headers=merged)
