"""The Anthropic Messages dialect, vendor side: the canonical chat body -> a Messages request for an
`api_style: anthropic` deployment, and its Messages answer -> a chat completion. The inverse of anthropic.py.
Pure functions; what cannot be expressed raises `Untranslatable` (the adapter turns it into a 400 for the
client, not a fallback: every Anthropic-format deployment would refuse it alike).

Decisions:
- `max_tokens` is required by Anthropic: the request's (`max_completion_tokens`, then `max_tokens`), else the
  deployment's `max_output_tokens`, else `DEFAULT_MAX_TOKENS`.
- `response_format` json_schema / json_object without client tools: a forced tool (`tool_choice` naming it) whose
  `input_schema` is the requested schema; its input comes back as the message's text, `finish_reason: stop`, so
  the client sees ordinary JSON content. With client tools present a forced tool would stop the model from
  calling them, so the schema goes into the system prompt as an instruction instead (honest but unenforced).
  With the forced tool, text the model writes besides it is dropped (streamed too): the answer is the JSON.
- `temperature` above Anthropic's 1.0 is clamped to 1.0 (chat allows up to 2); `n` > 1 and `logprobs` are
  refused; `user` becomes `metadata.user_id`; `seed`, `presence_penalty`, `frequency_penalty`,
  `reasoning_effort` and `stream_options` have no Messages equivalent and are left out.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.dialects.anthropic import FINISH_REASON, usage_from_anthropic

DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_output"  # the forced tool's default name (json_schema's `name` when given)


class Untranslatable(ValueError):
    """The chat request uses something the Messages API cannot express."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise Untranslatable("only base64 data: URLs can be sent as Anthropic images")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise Untranslatable(f"{where}.content must be a string or an array of parts", f"{where}.content")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise Untranslatable(f"{where}: image_url needs a url", f"{where}.content")
            blocks.append(_image_block(url))
        else:
            raise Untranslatable(f"{where}: content part {kind!r} cannot be sent in Anthropic format",
                                 f"{where}.content")
    return blocks


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Messages alternate user/assistant: consecutive turns of one role are merged."""
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise Untranslatable(f"{where}: a tool call needs function.name", where)
    args = fn.get("arguments") or "{}"
    try:
        value = orjson.loads(args) if isinstance(args, str) else args
    except orjson.JSONDecodeError:
        raise Untranslatable(f"{where}: tool call arguments are not JSON", where) from None
    if not isinstance(value, dict):
        raise Untranslatable(f"{where}: tool call arguments must be a JSON object", where)
    return {"type": "tool_use", "id": call.get("id") or "", "name": fn["name"], "input": value}


def _messages(chat_messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(chat_messages):
        where = f"messages.{i}"
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content")))
        elif role == "user":
            _append(out, "user", _content_blocks(m.get("content"), where))
        elif role == "assistant":
            blocks = _content_blocks(m.get("content"), where)
            blocks.extend(_tool_use(c, f"{where}.tool_calls.{j}") for j, c in enumerate(m.get("tool_calls") or ()))
            _append(out, "assistant", blocks)
        elif role == "tool":
            _append(out, "user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "",
                                   "content": _text_of(m.get("content"))}])
        else:
            raise Untranslatable(f"{where}: role {role!r} cannot be sent in Anthropic format", f"{where}.role")
    return system, out


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise Untranslatable(f"tools.{i}: only function tools can be sent in Anthropic format", f"tools.{i}")
        tool: dict[str, Any] = {"name": fn["name"],
                                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if isinstance(fn.get("description"), str):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise Untranslatable("'tool_choice' cannot be sent in Anthropic format", "tool_choice")


def _json_schema(rf: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if rf.get("type") == "json_schema":
        spec: dict[str, Any] = rf["json_schema"] if isinstance(rf.get("json_schema"), dict) else {}
        schema: dict[str, Any] = spec["schema"] if isinstance(spec.get("schema"), dict) else {"type": "object"}
        name: str = spec["name"] if isinstance(spec.get("name"), str) else JSON_TOOL
        return name, schema
    if rf.get("type") == "json_object":
        return JSON_TOOL, {"type": "object", "additionalProperties": True}
    return None


def chat_to_messages(body: dict[str, Any], default_max_tokens: int | None) -> tuple[dict[str, Any], str | None]:
    """The canonical chat body -> (Messages request body, name of the forced JSON tool or None)."""
    if (body.get("n") or 1) != 1:
        raise Untranslatable("'n' above 1 cannot be sent to an Anthropic-format deployment", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise Untranslatable("'logprobs' cannot be sent to an Anthropic-format deployment", "logprobs")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Untranslatable("'messages' must be an array", "messages")
    system, turns = _messages(messages)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    out: dict[str, Any] = {"model": body.get("model"), "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
                           "messages": turns}
    if isinstance(body.get("temperature"), (int, float)):
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is False:
            out["tool_choice"] = {**out.get("tool_choice", {"type": "auto"}), "disable_parallel_tool_use": True}
    json_tool = None
    rf = body.get("response_format")
    wanted = _json_schema(rf) if isinstance(rf, dict) else None
    if wanted is not None:
        name, schema = wanted
        if "tools" in out:
            system.append("Respond with only a JSON object matching this JSON schema, no other text: "
                          + orjson.dumps(schema).decode())
        else:
            json_tool = name
            out["tools"] = [{"name": name, "description": "Give the answer as this tool's input.",
                             "input_schema": schema}]
            out["tool_choice"] = {"type": "tool", "name": name}
    if system:
        out["system"] = "\n\n".join(system)
    return out, json_tool


# ---- answers ------------------------------------------------------------------------------------------------

def chat_usage(u: Any) -> dict[str, Any] | None:
    """Anthropic usage -> the chat usage object (prompt_tokens = input + cache reads + cache writes)."""
    usage = usage_from_anthropic(u)
    if usage is None:
        return None
    prompt = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
    return {"prompt_tokens": prompt, "completion_tokens": usage.output_tokens,
            "total_tokens": prompt + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "cache_creation_input_tokens": usage.cache_write_tokens}


def message_to_chat(msg: dict[str, Any], json_tool: str | None = None) -> dict[str, Any]:
    """A Messages response object -> a chat completion object."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use" and json_tool is not None and block.get("name") == json_tool:
            texts = [orjson.dumps(block.get("input", {})).decode()]  # the answer is the JSON: no prose around it
            break
        elif kind == "tool_use":
            calls.append({"id": block.get("id") or "", "type": "function",
                          "function": {"name": block.get("name") or "",
                                       "arguments": orjson.dumps(block.get("input", {})).decode()}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    finish = FINISH_REASON.get(msg.get("stop_reason") or "end_turn", "stop")
    if json_tool is not None and finish == "tool_calls" and not calls:
        finish = "stop"
    out: dict[str, Any] = {"id": msg.get("id") or "", "object": "chat.completion", "created": int(time.time()),
                           "model": msg.get("model") or "",
                           "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    usage = chat_usage(msg.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out
