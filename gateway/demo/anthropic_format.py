"""The Anthropic Messages format as a simulated vendor speaks it (pure functions over plain data).

DeepSeek serves one at https://api.deepseek.com/anthropic (`POST /anthropic/v1/messages`); the simulated
DeepSeek does too. This module is the vendor's own reading of the format, written from the Anthropic SDK's
types (anthropic-sdk-python `types/`), independent of the gateway's translators so tests can catch them out:

- `prompt_pieces`: the prompt as tokens in Anthropic's cache order (tools, system, messages) and the token
  offsets of the `cache_control` breakpoints;
- `chat_view`: the request as the chat-shaped dict `gateway.demo.answers.decide` reads;
- `message` / `stream_events`: the answer as a Message object, or as the SSE event sequence (message_start,
  content_block_start / ping / content_block_delta... / content_block_stop per block, message_delta with
  usage, message_stop);
- `error_body`: `{"type": "error", "error": {"type", "message"}, "request_id"}` with Anthropic's error types.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import orjson

from gateway.demo import textsim
from gateway.demo.answers import Answer
from gateway.demo.dialects import ErrorKind

# Anthropic's error type per kind of failure, and the status it comes with.
ERRORS: dict[str, tuple[int, str]] = {
    "auth": (401, "authentication_error"),
    "account": (402, "billing_error"),
    "model_not_found": (404, "not_found_error"),
    "context": (400, "invalid_request_error"),
    "bad_request": (400, "invalid_request_error"),
    "rate_limit": (429, "rate_limit_error"),
    "server": (500, "api_error"),
    "overloaded": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class BadMessagesRequest(ValueError):
    """A request the vendor refuses with 400 invalid_request_error; the message names the field."""


def error_body(kind: ErrorKind, message: str, request_id: str) -> tuple[int, dict[str, Any]]:
    status, etype = ERRORS[kind]
    return status, {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}


def validate(body: dict[str, Any]) -> None:
    """What the real endpoint refuses before looking at the model: missing max_tokens, bad messages or tools."""
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadMessagesRequest("max_tokens: Field required (a positive integer)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadMessagesRequest("messages: at least one message is required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise BadMessagesRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(msg.get("content"), (str, list)):
            raise BadMessagesRequest(f"messages.{i}.content: Input should be a string or a list of blocks")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("input_schema"), dict)
            for t in tools)):
        raise BadMessagesRequest("tools: each tool needs a name and an input_schema object")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _block_pieces(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "text":
        return textsim.token_pieces(str(block.get("text", "")))
    if kind == "image":
        digest = hashlib.sha256(orjson.dumps(block.get("source"), option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
        return [f"<img:{digest}:{i}>" for i in range(textsim.IMAGE_PART_TOKENS)]
    if kind == "tool_use":
        return textsim.token_pieces(f"<|call|>{block.get('id', '')}{block.get('name', '')}"
                                    + orjson.dumps(block.get("input")).decode())
    if kind == "tool_result":
        return textsim.token_pieces(f"<|result|>{block.get('tool_use_id', '')}") + [
            p for inner in _blocks(block.get("content")) for p in _block_pieces(inner)]
    if kind == "thinking":
        return textsim.token_pieces(str(block.get("thinking", "")))
    return textsim.token_pieces(orjson.dumps(block).decode())


def prompt_pieces(body: dict[str, Any]) -> tuple[list[str], list[int]]:
    """(the prompt's tokens, the offsets just after each block marked `cache_control`)."""
    pieces: list[str] = []
    breakpoints: list[int] = []

    def add(new: list[str], marked: Any) -> None:
        pieces.extend(new)
        if isinstance(marked, dict):
            breakpoints.append(len(pieces))

    for tool in body.get("tools") or ():
        shown = {k: v for k, v in tool.items() if k != "cache_control"}
        add(textsim.token_pieces("<|tool|>" + orjson.dumps(shown).decode()), tool.get("cache_control"))
    system = body.get("system")
    if system:
        pieces.extend(textsim.token_pieces("<|system|>"))
        for block in _blocks(system):
            add(_block_pieces(block), block.get("cache_control"))
    for msg in body["messages"]:
        pieces.extend(textsim.token_pieces(f"<|{msg['role']}|>"))
        for block in _blocks(msg["content"]):
            add(_block_pieces(block), block.get("cache_control"))
    pieces.append("<|assistant|>")
    return pieces, breakpoints


def _text(blocks: list[dict[str, Any]]) -> str:
    return "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as `answers.decide` reads it: tool results become `tool` messages, tool_use tool calls."""
    messages: list[dict[str, Any]] = []
    system = _text(_blocks(body.get("system")))
    if system:
        messages.append({"role": "system", "content": system})
    for msg in body["messages"]:
        blocks = _blocks(msg["content"])
        if msg["role"] == "assistant":
            calls = [{"id": b.get("id"), "type": "function",
                      "function": {"name": b.get("name"), "arguments": orjson.dumps(b.get("input")).decode()}}
                     for b in blocks if b.get("type") == "tool_use"]
            messages.append({"role": "assistant", "content": _text(blocks), **({"tool_calls": calls} if calls else {})})
            continue
        for b in blocks:
            if b.get("type") == "tool_result":
                inner = b.get("content")
                text = inner if isinstance(inner, str) else _text(_blocks(inner))
                messages.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": text})
        if any(b.get("type") != "tool_result" for b in blocks):
            messages.append({"role": "user", "content": _text(blocks)})
    tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                               "parameters": t["input_schema"]}} for t in body.get("tools") or ()]
    view: dict[str, Any] = {"messages": messages, "tools": tools or None}
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        view["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind)) or (
            {"type": "function", "function": {"name": choice.get("name")}} if kind == "tool" else "auto")
        view["parallel_tool_calls"] = choice.get("disable_parallel_tool_use") is not True
    return view


def apply_stop_sequences(answer: Answer, stops: Any) -> tuple[Answer, str | None]:
    """Cut a text answer at the first stop sequence it contains: (answer, the sequence or None)."""
    if answer.content is None or not isinstance(stops, list):
        return answer, None
    hits = [(answer.content.find(s), s) for s in stops if isinstance(s, str) and s and s in answer.content]
    if not hits:
        return answer, None
    at, seq = min(hits)
    text = answer.content[:at]
    return Answer(text, (), "stop_sequence", textsim.count_tokens(text)), seq


def content_blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.content:
        blocks.append({"type": "text", "text": answer.content})
    for call in answer.tool_calls:
        blocks.append({"type": "tool_use", "id": _tool_id(call.id), "name": call.name,
                       "input": orjson.loads(call.arguments)})
    return blocks


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def usage(input_tokens: int, read: int, written: int, output: int) -> dict[str, Any]:
    """Anthropic's usage: `input_tokens` excludes what was read from and written to the cache."""
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read, "output_tokens": output, "service_tier": "standard"}


def message(mid: str, model: str, answer: Answer, stop_sequence: str | None,
            usage_obj: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": content_blocks(answer),
        "stop_reason": STOP_REASONS.get(answer.finish, answer.finish), "stop_sequence": stop_sequence,
    }
    if usage_obj is not None:
        out["usage"] = usage_obj
    return out


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def stream_events(mid: str, model: str, answer: Answer, stop_sequence: str | None,
                  usage_obj: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The events of a streamed answer, in Anthropic's order; text and tool input arrive in several deltas."""
    start: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                             "stop_reason": None, "stop_sequence": None}
    if usage_obj is not None:
        start["usage"] = {**usage_obj, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(content_blocks(answer)):
        if block["type"] == "text":
            yield {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            if index == 0:
                yield {"type": "ping"}
            for piece in _split(block["text"], 6):
                yield {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
        else:
            opened = {**block, "input": {}}
            yield {"type": "content_block_start", "index": index, "content_block": opened}
            for piece in _split(orjson.dumps(block["input"]).decode(), 4):
                yield {"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}
        yield {"type": "content_block_stop", "index": index}
    delta: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": STOP_REASONS.get(answer.finish, answer.finish),
                                       "stop_sequence": stop_sequence}}
    if usage_obj is not None:
        delta["usage"] = usage_obj
    yield delta
    yield {"type": "message_stop"}


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    step = max(1, -(-len(text) // parts))
    return [text[i : i + step] for i in range(0, len(text), step)]
