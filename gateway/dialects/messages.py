"""The `POST /v1/messages` client dialect (Anthropic Messages API) on the one request path.

- parse: the Messages body -> the canonical chat body (gateway/dialects/anthropic.py), the client's own body kept
  as `native` for a deployment that speaks Messages itself (`api_style: anthropic`: pass-through, `cache_control`,
  `thinking`, `top_k` and every block kept). A request using something only Messages can carry (`native_only`)
  is limited to such deployments (`ParsedRequest.native_only`); none eligible is a 400 naming what it used.
- render / client_stream: a chat answer -> a Message / the Anthropic event sequence (anthropic_stream.py).
- native_usage / native_stream: the pass-through's usage and relay.
- error_response: the Anthropic error shape from the one status map (gateway/http/errors.py).
"""

from __future__ import annotations

from dataclasses import replace

from typing import Any, Mapping

import orjson
from starlette.responses import Response

from gateway.dialects.anthropic import chat_to_message, messages_to_chat, usage_from_anthropic
from gateway.dialects.anthropic_stream import MessagesEncoder, NativeStream
from gateway.dialects.base import ClientStream, EncodedStream
from gateway.domain import Mode, Usage
from gateway.errors import BadRequest
from gateway.http.errors import anthropic_error_response
from gateway.http.parse import ParsedRequest, chat_request, parse_json_body
from gateway.metering import usage_from_payload
from gateway.providers.base import JSONResult
from gateway.tokens import TokenCounter


class MessagesDialect:
    api = "messages"
    mode: Mode = "chat"
    native_style: str | None = "anthropic"

    def parse(self, raw: bytes, headers: Mapping[str, str], counter: TokenCounter,
              default_output: int) -> ParsedRequest:
        return self.parse_body(parse_json_body(raw), headers, counter, default_output)

    def parse_body(self, body: dict[str, Any], headers: Mapping[str, str], counter: TokenCounter,
                   default_output: int) -> ParsedRequest:
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise BadRequest("'model' is required and must be a string", param="model")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        gateway_field = body.pop("gateway", None)
        translated = messages_to_chat(body)
        chat = translated.chat
        if gateway_field is not None:
            chat["gateway"] = gateway_field
        parsed = chat_request(chat, headers, counter, default_output, api=self.api, native=body,
                              marks=translated.marks)
        if translated.native_only:
            return replace(parsed, native_only=translated.native_only)
        return parsed

    def render(self, result: JSONResult, parsed: ParsedRequest) -> bytes:
        return orjson.dumps(chat_to_message(result.obj, usage_from_payload(result.obj)))

    def client_stream(self, parsed: ParsedRequest) -> ClientStream:
        return EncodedStream(MessagesEncoder())

    def native_usage(self, obj: dict[str, Any]) -> Usage | None:
        return usage_from_anthropic(obj.get("usage"))

    def native_stream(self, parsed: ParsedRequest) -> ClientStream:
        return NativeStream()

    def error_response(self, exc: Exception, headers: dict[str, str] | None = None) -> Response:
        return anthropic_error_response(exc, headers)


def count_tokens(raw: bytes, headers: Mapping[str, str], counter: TokenCounter) -> tuple[ParsedRequest, int]:
    """`POST /v1/messages/count_tokens`: the gateway's estimate of the prompt, over the same canonical request the
    router ranks (`max_tokens` is not part of a count request, so a placeholder is supplied)."""
    body = parse_json_body(raw)
    body.setdefault("max_tokens", 1)
    parsed = MESSAGES.parse_body(body, headers, counter, 0)
    return parsed, parsed.facts.prompt_tokens


MESSAGES = MessagesDialect()
