"""Reading usage out of vendor responses, in every dialect the seed vendors speak.

- OpenAI: `usage.prompt_tokens`, `usage.completion_tokens`, `usage.prompt_tokens_details.cached_tokens`.
- DeepSeek: `usage.prompt_cache_hit_tokens` (and `prompt_cache_miss_tokens`).
- Moonshot: usage inside `choices[0].usage` on the last streamed chunk.
- Anthropic-format vendors (through gateway/providers/anthropic.py): `usage.cache_creation_input_tokens`, the
  tokens written to the vendor's cache, part of `prompt_tokens`.
- Some vendors repeat cumulative usage on every chunk: the last report wins; usage is never summed.

`StreamMeter` watches a relayed SSE stream: it finds the usage without parsing every chunk (a byte scan for
`"usage"` first, and `"usage":null` is no usage), drops or strips usage the client did not ask for, and keeps the
payloads so output can be counted locally when the vendor sent no usage at all.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.domain import Usage
from gateway.providers.sse import frames
from gateway.tokens import TokenCounter


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def usage_from_dict(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    prompt = _int(u.get("prompt_tokens", u.get("input_tokens")))
    output = _int(u.get("completion_tokens", u.get("output_tokens")))
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    if not cached:
        cached = _int(u.get("prompt_cache_hit_tokens"))
    cached = min(cached, prompt)
    # Cache writes inside prompt_tokens: what the anthropic-style adapter (and litellm) report for Anthropic's
    # `cache_creation_input_tokens`.
    write = min(_int(u.get("cache_creation_input_tokens")), prompt - cached)
    return Usage(input_tokens=prompt - cached - write, cached_input_tokens=cached, output_tokens=output,
                 source="provider", cache_write_tokens=write)


def usage_from_payload(obj: Any) -> Usage | None:
    """Usage of a chat/embedding response object or stream chunk, wherever the vendor put it."""
    if not isinstance(obj, dict):
        return None
    found = usage_from_dict(obj.get("usage"))
    if found is not None:
        return found
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return usage_from_dict(choices[0].get("usage"))
    return None


def _only_null_usage(data: bytes) -> bool:
    """Every `"usage"` key in the chunk is null (OpenAI repeats `"usage":null` on each chunk of a stream that asked
    for usage): nothing to read, and no need to parse the chunk."""
    return data.count(b'"usage"') == data.count(b'"usage":null') + data.count(b'"usage": null')


def _strip_usage(obj: dict[str, Any]) -> dict[str, Any]:
    obj.pop("usage", None)
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict):
            choice.pop("usage", None)
    return obj


class StreamMeter:
    """Follows one stream: usage as reported, output text for local counting, and what to pass on."""

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.payloads: list[bytes] = []
        self.chunks = 0

    def feed(self, data: bytes) -> bytes | None:
        """One SSE `data:` payload from the vendor -> the payload to send the client (None: send nothing)."""
        if data == b"[DONE]":
            return data
        self.chunks += 1
        if b'"usage"' not in data or _only_null_usage(data):
            self.payloads.append(data)
            return data
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.payloads.append(data)
            return data
        usage = usage_from_payload(obj)
        if usage is not None:
            self.usage = usage  # cumulative dialects: the last report is the total
        self.payloads.append(data)
        if self.client_wants_usage or usage is None:
            return data
        if isinstance(obj, dict) and not obj.get("choices"):
            return None  # the usage-only chunk the client did not ask for
        return orjson.dumps(_strip_usage(obj)) if isinstance(obj, dict) else data

    def relay(self, batch: list[bytes]) -> bytes:
        """`feed` a batch of payloads -> the SSE bytes to send the client for it (b"" for nothing)."""
        feed = self.feed
        return frames([out for out in map(feed, batch) if out is not None])

    def output_text(self) -> str:
        parts: list[str] = []
        for data in self.payloads:
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    for field in ("content", "reasoning_content"):
                        if isinstance(delta.get(field), str):
                            parts.append(delta[field])
                    if delta.get("tool_calls"):
                        parts.append(orjson.dumps(delta["tool_calls"]).decode())
        return "".join(parts)

    def final_usage(self, prompt_estimate: int, counter: TokenCounter) -> Usage:
        """The vendor's last usage report, else a local count marked `estimated`."""
        if self.usage is not None:
            return self.usage
        return Usage(prompt_estimate, 0, counter.count_text(self.output_text()), source="estimated")
