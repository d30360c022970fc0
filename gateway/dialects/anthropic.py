"""The Anthropic Messages dialect, client side: a /v1/messages request -> the canonical chat body, and a chat
completion -> a Messages response. Pure functions over plain data (no I/O); the vendor side (canonical chat ->
Messages, for `api_style: anthropic` deployments) is its inverse, in anthropic_vendor.py.

Decisions (contract section 4: translated when the dialects differ, unchanged when they match):
- Blocks and fields chat cannot carry are listed in `MessagesRequest.native_only` (server tools, documents,
  `top_k`, `container`, `mcp_servers`, ...). The pass-through to an Anthropic-format deployment keeps them; a
  deployment that would need them translated is refused with a 400 naming them (`untranslatable_error`), never
  given a silently thinner request.
- `thinking` blocks (and the `thinking` parameter) are dropped when translating: chat has no signed reasoning
  turn to replay, and a reasoning model thinks anyway. They are kept on pass-through.
- `tool_result` blocks become `tool` messages placed before the rest of their user turn (chat wants tool answers
  straight after the assistant's `tool_calls`); `is_error` prefixes the text with "Error: ".
- `system` blocks are joined with a blank line into one system message; `cache_control` marks are pass-through
  only (the OpenAI-format vendors cache automatically). Where they were is kept for the prefix cache
  (`MessagesRequest.marks`: a turn with a marked block counts as marked at the last chat message translated so
  far, i.e. the end of that turn), so it predicts an explicit cache's writes and hits for the pass-through.
- `stop_reason`: chat's `stop` cannot tell a stop sequence from a natural end, so it is `end_turn`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.domain import Usage
from gateway.errors import BadRequest
from gateway.segments import CacheMarks

ANTHROPIC_VERSION = "2023-06-01"

# chat finish_reason -> Messages stop_reason
STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
               "content_filter": "refusal"}
# Messages stop_reason -> chat finish_reason (the vendor side)
FINISH_REASON = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                 "refusal": "content_filter", "pause_turn": "stop", "model_context_window_exceeded": "length"}

_PASSED_AS_IS = ("temperature", "top_p", "stream")
# Top-level fields only the pass-through can honour (chat has no equivalent).
_NATIVE_FIELDS = ("top_k", "container", "mcp_servers", "service_tier", "context_management", "inference_geo")
_KNOWN_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "tools", "tool_choice",
                           "metadata", "thinking", "gateway", *_PASSED_AS_IS, *_NATIVE_FIELDS})


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    chat: dict[str, Any]  # the canonical chat body (no `model` change, no `gateway` field)
    native_only: tuple[str, ...]  # what only an Anthropic-format deployment can be sent (empty: translates fully)
    marks: CacheMarks | None = None  # where the client's cache_control marks fall in `chat` (None: no mark)


def _has_mark(blocks: Any) -> bool:
    return isinstance(blocks, list) and any(isinstance(b, dict) and "cache_control" in b for b in blocks)


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise BadRequest(f"{where}: a text block needs a string 'text'", param=where)
    return text


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise BadRequest(f"{where}: an image block needs a 'source' object", param=where)
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise BadRequest(f"{where}: a base64 image needs 'media_type' and 'data' strings", param=where)
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise BadRequest(f"{where}: image source type must be 'base64' or 'url'", param=where)


def _tool_result_text(block: dict[str, Any], where: str, native: list[str]) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for i, b in enumerate(content):
            if isinstance(b, dict) and b.get("type") == "text":
                parts.append(_text(b, f"{where}.content.{i}"))
            else:
                native.append(f"{where}.content.{i}: {b.get('type') if isinstance(b, dict) else 'non-object'} "
                              "inside tool_result")
        text = "\n".join(parts)
    else:
        raise BadRequest(f"{where}: 'content' must be a string or an array of blocks", param=where)
    return f"Error: {text}" if block.get("is_error") else text


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise BadRequest(f"{where}: 'content' must be a string or an array of content blocks", param=where)
    return content


def _user_turn(content: Any, where: str, native: list[str]) -> list[dict[str, Any]]:
    tool_msgs: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, b in enumerate(_blocks(content, where)):
        at = f"{where}.content.{i}"
        kind = b.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text(b, at)})
        elif kind == "image":
            parts.append(_image_part(b, at))
        elif kind == "tool_result":
            if not isinstance(b.get("tool_use_id"), str):
                raise BadRequest(f"{at}: a tool_result block needs a string 'tool_use_id'", param=at)
            tool_msgs.append({"role": "tool", "tool_call_id": b["tool_use_id"],
                              "content": _tool_result_text(b, at, native)})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            native.append(f"{at}: block type {kind!r}")
    out = tool_msgs
    if parts:
        simple = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if simple else parts})
    return out


def _assistant_turn(content: Any, where: str, native: list[str]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, b in enumerate(_blocks(content, where)):
        at = f"{where}.content.{i}"
        kind = b.get("type")
        if kind == "text":
            texts.append(_text(b, at))
        elif kind == "tool_use":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                raise BadRequest(f"{at}: a tool_use block needs string 'id' and 'name'", param=at)
            calls.append({"id": b["id"], "type": "function",
                          "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input", {})).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            native.append(f"{at}: block type {kind!r}")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _system(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system):
        return "\n\n".join(_text(b, f"system.{i}") for i, b in enumerate(system))
    raise BadRequest("'system' must be a string or an array of text blocks", param="system")


def _tools(tools: Any, native: list[str]) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"tools.{i}: a tool needs a string 'name'", param=f"tools.{i}")
        if t.get("type") not in (None, "custom") or "input_schema" not in t:
            native.append(f"tools.{i}: server tool {t.get('type') or t['name']!r}")
            continue
        fn: dict[str, Any] = {"name": t["name"], "parameters": t["input_schema"]}
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool]:
    """(chat tool_choice, parallel tool calls allowed)."""
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise BadRequest("'tool_choice' must be {type: auto|any|tool|none}", param="tool_choice")
    parallel = not choice.get("disable_parallel_tool_use", False)
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise BadRequest("tool_choice of type 'tool' needs a 'name'", param="tool_choice")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel


def messages_to_chat(body: dict[str, Any]) -> MessagesRequest:
    """A Messages request body (already JSON-decoded, `gateway` removed) -> the canonical chat body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a non-empty array of message objects", param="messages")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("'max_tokens' is required and must be a positive integer", param="max_tokens")
    native: list[str] = [f"'{k}'" for k in _NATIVE_FIELDS if body.get(k) is not None]
    native.extend(f"'{k}'" for k in sorted(set(body) - _KNOWN_FIELDS))
    chat_messages: list[dict[str, Any]] = []
    marked: list[int] = []
    system = _system(body.get("system"))
    if system is not None:
        chat_messages.append({"role": "system", "content": system})
        if _has_mark(body.get("system")):
            marked.append(0)
    for i, m in enumerate(messages):
        role, where = m.get("role"), f"messages.{i}"
        if role == "user":
            chat_messages.extend(_user_turn(m.get("content"), where, native))
        elif role == "assistant":
            chat_messages.append(_assistant_turn(m.get("content"), where, native))
        else:
            raise BadRequest(f"{where}.role must be 'user' or 'assistant'", param=f"{where}.role")
        if chat_messages and _has_mark(m.get("content")):
            marked.append(len(chat_messages) - 1)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": chat_messages, "max_tokens": max_tokens}
    for key in _PASSED_AS_IS:
        if key in body:
            chat[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadRequest("'stop_sequences' must be an array of strings", param="stop_sequences")
        chat["stop"] = stops
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"], native)
    if body.get("tool_choice") is not None:
        chat["tool_choice"], parallel = _tool_choice(body["tool_choice"])
        if not parallel and chat.get("tools"):
            chat["parallel_tool_calls"] = False
        if not chat.get("tools"):
            chat.pop("tool_choice")  # chat vendors refuse a tool_choice without tools
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    tools_marked = _has_mark(body.get("tools"))
    marks = CacheMarks(tuple(marked), tools_marked) if marked or tools_marked else None
    return MessagesRequest(chat, tuple(native), marks)


# ---- answers ------------------------------------------------------------------------------------------------

def usage_from_anthropic(u: Any) -> Usage | None:
    """Anthropic usage -> Usage. Its `input_tokens` already excludes cache reads and writes."""
    if not isinstance(u, dict):
        return None

    def n(key: str) -> int:
        v = u.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    return Usage(n("input_tokens"), n("cache_read_input_tokens"), n("output_tokens"), source="provider",
                 cache_write_tokens=n("cache_creation_input_tokens"))


def anthropic_usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens}


def message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id.startswith("msg_"):
        return chat_id
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else f"msg_{int(time.time() * 1000)}"


def tool_input(arguments: Any) -> dict[str, Any]:
    """A chat tool call's `arguments` string -> a Messages `input` object (which must be an object)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments) if isinstance(arguments, (str, bytes)) and arguments else {}
    except orjson.JSONDecodeError:
        return {"_unparsed_arguments": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def chat_to_message(obj: dict[str, Any], usage: Usage | None, model: str | None = None) -> dict[str, Any]:
    """A chat completion object -> a Messages response object (usage as the gateway metered it)."""
    choices = obj.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = msg.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
                        "input": tool_input(fn.get("arguments"))})
    finish = choice.get("finish_reason")
    stop_reason = STOP_REASON.get(finish, "end_turn") if finish is not None else "end_turn"
    if stop_reason == "end_turn" and any(b["type"] == "tool_use" for b in content):
        stop_reason = "tool_use"
    return {"id": message_id(obj.get("id")), "type": "message", "role": "assistant",
            "model": model or obj.get("model") or "", "content": content, "stop_reason": stop_reason,
            "stop_sequence": None, "usage": anthropic_usage(usage)}
