"""The OpenAI dialects the gateway has always spoken: chat completions and embeddings. Identity translations:
the client's body is the canonical one, and the vendor's bytes go back unchanged."""

from __future__ import annotations

from typing import Any, Mapping

from starlette.responses import Response

from gateway.domain import Mode, Usage
from gateway.http.errors import error_payload, error_response
from gateway.http.parse import ParsedRequest, parse_chat, parse_embedding
from gateway.metering import StreamMeter
from gateway.providers.base import JSONResult
from gateway.providers.sse import DONE, frame
from gateway.tokens import TokenCounter



class ChatStream(StreamMeter):
    """The chat client's stream: the vendor's chunks as they come (usage dropped unless asked for), `[DONE]` ends
    the body, and a failure after the first byte ends it with an SSE `{"error": ...}` event and no `[DONE]`."""

    def ended(self, batch: list[bytes]) -> bool:
        return batch[-1] == DONE

    def finish(self) -> bytes:
        return b""

    def fail(self, message: str, kind: str) -> bytes:
        return frame(error_payload(message, "upstream_stream_error"))


class _OpenAIDialect:
    native_style: str | None = None

    def render(self, result: JSONResult, parsed: ParsedRequest) -> bytes:
        return result.body

    def native_usage(self, obj: dict[str, Any]) -> Usage | None:
        raise NotImplementedError("the OpenAI dialects have no pass-through")

    def native_stream(self, parsed: ParsedRequest) -> ChatStream:
        raise NotImplementedError("the OpenAI dialects have no pass-through")

    def error_response(self, exc: Exception, headers: dict[str, str] | None = None) -> Response:
        return error_response(exc, headers)


class ChatDialect(_OpenAIDialect):
    api = "chat"
    mode: Mode = "chat"

    def parse(self, raw: bytes, headers: Mapping[str, str], counter: TokenCounter,
              default_output: int) -> ParsedRequest:
        return parse_chat(raw, headers, counter, default_output)

    def client_stream(self, parsed: ParsedRequest) -> ChatStream:
        return ChatStream(parsed.client_wants_usage)


class EmbeddingsDialect(_OpenAIDialect):
    api = "embeddings"
    mode: Mode = "embedding"

    def parse(self, raw: bytes, headers: Mapping[str, str], counter: TokenCounter,
              default_output: int) -> ParsedRequest:
        return parse_embedding(raw, headers, counter)

    def client_stream(self, parsed: ParsedRequest) -> ChatStream:
        return ChatStream(False)
