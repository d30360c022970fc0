"""`POST /v1/responses`: the OpenAI Responses API as a client dialect of the one request path.

The request is translated to a chat-completions body (gateway/dialects/responses.py) and routed, metered, priced,
budgeted and written to the ledger like any chat completion (api "responses"); the chat answer is rendered as a
Response object (responses_output.py) and a chat stream re-encoded as Responses events (responses_stream.py).
Errors keep the OpenAI format and status map: the Responses API's errors are OpenAI errors. No deployment speaks
Responses natively (no `api_style: responses`), so there is no pass-through.
"""

from __future__ import annotations

from typing import Any, Mapping

from starlette.responses import Response

from gateway.dialects.base import EncodedStream
from gateway.dialects.responses import to_chat
from gateway.dialects.responses_output import new_response_id, render
from gateway.dialects.responses_stream import ResponsesEncoder
from gateway.domain import Mode, Usage
from gateway.http.errors import error_response
from gateway.http.parse import ParsedRequest, chat_request, parse_json_body
from gateway.providers.base import JSONResult
from gateway.tokens import TokenCounter


class ResponsesDialect:
    api = "responses"
    mode: Mode = "chat"
    native_style: str | None = None

    def parse(self, raw: bytes, headers: Mapping[str, str], counter: TokenCounter,
              default_output: int) -> ParsedRequest:
        translated = to_chat(parse_json_body(raw))
        return chat_request(translated.body, headers, counter, default_output, api=self.api,
                            context=translated.echo)

    def render(self, result: JSONResult, parsed: ParsedRequest) -> bytes:
        return render(result.obj, parsed.context, new_response_id(), requested_model=parsed.facts.model)

    def client_stream(self, parsed: ParsedRequest) -> EncodedStream:
        return EncodedStream(ResponsesEncoder(parsed.context, new_response_id(), parsed.facts.model))

    def native_usage(self, obj: dict[str, Any]) -> Usage | None:
        raise NotImplementedError("no vendor speaks the Responses API natively here")

    def native_stream(self, parsed: ParsedRequest) -> EncodedStream:
        raise NotImplementedError("no vendor speaks the Responses API natively here")

    def error_response(self, exc: Exception, headers: dict[str, str] | None = None) -> Response:
        return error_response(exc, headers)
