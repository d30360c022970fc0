"""Adapter for `api_style: anthropic` providers: the Anthropic Messages API (`POST {api_base}/v1/messages`, as
Anthropic and the vendors' Anthropic-compatible endpoints serve it), native: no litellm.

It rides the same HTTP client stack as `OpenAICompatProvider` (one aiohttp session per provider, or an injected
httpx transport in tests) and differs only in the edges:
- the credential goes as `x-api-key` with `anthropic-version: 2023-06-01`;
- `complete` / `stream` take the canonical chat body and translate it (gateway/dialects/anthropic_vendor.py), and
  translate the answer and each streamed event back to chat form (gateway/dialects/anthropic_stream.py), so the
  pipeline, the meter and the ledger see chat;
- `complete_native` / `stream_native` are the pass-through for a /v1/messages client: its body goes up unchanged
  but for `model`, and the vendor's bytes (or event payloads) come back unchanged.
A request the Messages API cannot express (`n` > 1, a non-function tool, ...) is a 400 for the client, like any
request the vendor would refuse; vendor errors map as for openai-style providers (429 rate limited, 529
overloaded is a 5xx and falls back, 401/402/403 are account faults whose text is never relayed).
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson

from gateway.decisions.fallback import HTTP_4XX
from gateway.dialects.anthropic import ANTHROPIC_VERSION
from gateway.dialects.anthropic_stream import ChunksFromEvents
from gateway.dialects.anthropic_vendor import Untranslatable, chat_to_messages, message_to_chat
from gateway.domain import Deployment
from gateway.providers.base import EventStream, JSONResult, UpstreamFailure
from gateway.providers.openai_compat import OpenAICompatProvider

MESSAGES_PATH = "v1/messages"


class _TranslatedStream:
    """A vendor's Anthropic event stream, read as chat chunk batches."""

    def __init__(self, events: EventStream, json_tool: str | None) -> None:
        self._events = events
        self._chunks = ChunksFromEvents(json_tool)

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        feed = self._chunks.feed_batch
        async for batch in self._events:
            out = feed(batch)
            if out:
                yield out
        self._chunks.raise_pending()

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._batches()

    async def aclose(self) -> None:
        await self._events.aclose()


class AnthropicProvider(OpenAICompatProvider):
    STYLE_HEADERS = {"anthropic-version": ANTHROPIC_VERSION}

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    @staticmethod
    def _translate(deployment: Deployment, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        try:
            return chat_to_messages(body, deployment.max_output_tokens)
        except Untranslatable as e:
            raise UpstreamFailure(HTTP_4XX, status=400, message=str(e), code="untranslatable_request",
                                  param=e.param) from None

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        request, json_tool = self._translate(deployment, body)
        result = await self._post_json(MESSAGES_PATH, request)
        chat = message_to_chat(result.obj, json_tool)
        return JSONResult(orjson.dumps(chat), chat)

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> EventStream:
        request, json_tool = self._translate(deployment, body)
        return _TranslatedStream(await self._open_stream(MESSAGES_PATH, request), json_tool)

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        raise UpstreamFailure(HTTP_4XX, status=400, message="Anthropic-format providers serve no embeddings")

    # ---- pass-through (a /v1/messages client) -------------------------------------------------------------------

    async def complete_native(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        """The client's Messages body (model already replaced) -> the vendor's Message bytes, unchanged."""
        return await self._post_json(MESSAGES_PATH, body)

    async def stream_native(self, deployment: Deployment, body: dict[str, Any]) -> EventStream:
        """The client's streamed Messages body -> the vendor's event payloads, unchanged."""
        return await self._open_stream(MESSAGES_PATH, body)
