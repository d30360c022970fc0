"""The Responses client dialect as the pipeline sees it: parse -> canonical ParsedRequest, render, errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.datastructures import Headers

from gateway.dialects import DIALECTS, ROUTES
from gateway.errors import BadRequest
from gateway.http.parse import ParsedRequest
from gateway.providers.base import JSONResult
from gateway.tokens import TokenCounter

DIALECT = DIALECTS["responses"]
HEADERS = Headers(raw=[(b"content-type", b"application/json")])


def parse(body: dict[str, Any]) -> ParsedRequest:
    return DIALECT.parse(orjson.dumps(body), HEADERS, TokenCounter(), 256)


def test_route_and_ledger_api_name() -> None:
    assert ROUTES["/v1/responses"] == "responses"
    assert DIALECT.api == "responses" and DIALECT.mode == "chat" and DIALECT.native_style is None


def test_parse_gives_the_chat_facts_and_keeps_the_echo_for_the_answer() -> None:
    parsed = parse({"model": "auto", "input": "hi", "instructions": "sys", "max_output_tokens": 50,
                    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                    "text": {"format": {"type": "json_object"}}, "stream": True,
                    "gateway": {"min_quality": 80}, "metadata": {"k": "v"}})
    assert parsed.api == "responses"
    assert parsed.native is None and parsed.native_only == ()
    assert parsed.stream is True
    facts = parsed.facts
    assert facts.requested_output_tokens == 50 and facts.constraints.min_quality == 80
    assert facts.capabilities == frozenset({"tools", "json_mode"})
    assert "gateway" not in parsed.body
    assert parsed.context["metadata"] == {"k": "v"}


def test_forbidden_routing_fields_are_refused_as_on_chat() -> None:
    with pytest.raises(BadRequest) as info:
        parse({"model": "auto", "input": "hi", "api_base": "http://evil"})
    assert info.value.param == "api_base"


def test_render_is_a_response_with_the_requests_echo() -> None:
    parsed = parse({"model": "auto", "input": "hi", "metadata": {"k": "v"}})
    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "glm-3-turbo",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    body = orjson.loads(DIALECT.render(JSONResult(orjson.dumps(completion), completion), parsed))
    assert body["object"] == "response" and body["metadata"] == {"k": "v"}
    assert body["output"][0]["content"][0]["text"] == "hello" and body["usage"]["total_tokens"] == 6


def test_errors_are_openai_shaped_with_no_retry_for_client_faults() -> None:
    response = DIALECT.error_response(BadRequest("'x' is wrong", code="unsupported_parameter", param="x"))
    assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
    assert orjson.loads(response.body) == {"error": {"message": "'x' is wrong", "type": "invalid_request_error",
                                                     "param": "x", "code": "unsupported_parameter"}}
