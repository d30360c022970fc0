"""The Responses API's answer, built from the gateway's canonical chat completion (pure, no I/O).

Shared by the non-streamed answer (`render`) and the stream encoder (gateway/dialects/responses_stream.py), so a
streamed response's final `response.completed` object is the one `render` would have produced.

Mapping: `finish_reason` "length" -> status `incomplete` with `incomplete_details.reason` `max_output_tokens`,
"content_filter" -> `incomplete` / `content_filter`; anything else `completed`. The assistant's text becomes one
`message` item (one `output_text` part, or a `refusal` part), each tool call a `function_call` item (its chat `id`
is the `call_id` the client answers with), a reasoning vendor's `reasoning_content` a `reasoning` item (first, as
the real API orders them). Usage: Responses `input_tokens` INCLUDE cached (and cache-written) tokens.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from gateway.domain import Usage
from gateway.metering import usage_from_payload

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def item_id(response_id: str, prefix: str, index: int) -> str:
    """Ids of output items, derived from the response's: unique within it and stable across its events."""
    return f"{prefix}_{response_id[5:]}{index:02d}"


def incomplete_reason(finish_reason: Any) -> str | None:
    return _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None


def response_usage(usage: Usage | None, reasoning_tokens: int = 0) -> dict[str, Any] | None:
    if usage is None:
        return None
    cache_write = getattr(usage, "cache_write_tokens", 0)
    prompt = usage.input_tokens + usage.cached_input_tokens + cache_write
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens, "cache_write_tokens": cache_write},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": min(reasoning_tokens, usage.output_tokens)},
        "total_tokens": prompt + usage.output_tokens,
    }


def reasoning_tokens_of(usage: Any) -> int:
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def response_object(response_id: str, created_at: int, model: str, echo: dict[str, Any], status: str,
                    output: list[dict[str, Any]], usage: dict[str, Any] | None,
                    incomplete: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response in the shape the real API returns (the request's parameters echoed; nothing stored)."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model, "output": output, "previous_response_id": None, "store": False,
        "max_tool_calls": None, "top_logprobs": 0, "service_tier": "default", "usage": usage, **echo,
    }


def message_item(response_id: str, index: int, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    part: dict[str, Any]
    if refusal:
        part = {"type": "refusal", "refusal": refusal}
    else:
        part = {"type": "output_text", "text": text or "", "annotations": [], "logprobs": []}
    return {"id": item_id(response_id, "msg", index), "type": "message", "role": "assistant", "status": status,
            "content": [part]}


def function_call_item(response_id: str, index: int, call_id: str, name: str, arguments: str,
                       status: str) -> dict[str, Any]:
    return {"id": item_id(response_id, "fc", index), "type": "function_call", "status": status,
            "call_id": call_id, "name": name, "arguments": arguments}


def reasoning_item(response_id: str, index: int, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id(response_id, "rs", index), "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def output_items(response_id: str, message: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The output items of one chat `message` (reasoning, then text, then calls: the order they stream in)."""
    out: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        out.append(reasoning_item(response_id, len(out), reasoning, status))
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(content, list):  # a vendor answering in parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if (isinstance(content, str) and content) or (isinstance(refusal, str) and refusal):
        out.append(message_item(response_id, len(out), content if isinstance(content, str) else None,
                                refusal if isinstance(refusal, str) else None, status))
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        out.append(function_call_item(response_id, len(out), str(call.get("id") or ""),
                                      str(function.get("name") or ""), str(function.get("arguments") or ""),
                                      status))
    return out


def from_completion(completion: dict[str, Any], echo: dict[str, Any], response_id: str,
                    usage: Usage | None = None, requested_model: str | None = None) -> dict[str, Any]:
    """The Response for a chat completion. `usage` is the gateway's metered usage (used when the completion
    carries none, e.g. an estimate); the completion's own usage wins when present."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    incomplete = incomplete_reason(choice.get("finish_reason"))
    status = "incomplete" if incomplete else "completed"
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    metered = usage_from_payload(completion) or usage
    created = completion.get("created")
    model = completion.get("model") or requested_model or ""
    return response_object(
        response_id, created if isinstance(created, int) else int(time.time()), str(model), echo, status,
        output_items(response_id, message, status),
        response_usage(metered, reasoning_tokens_of(completion.get("usage"))), incomplete)


def render(completion: dict[str, Any], echo: dict[str, Any], response_id: str, usage: Usage | None = None,
           requested_model: str | None = None) -> bytes:
    return orjson.dumps(from_completion(completion, echo, response_id, usage, requested_model))
