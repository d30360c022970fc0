"""OpenAI Responses API request -> the gateway's canonical chat-completions body (pure, no I/O).

The gateway is stateless (contract section 4): whatever needs state kept by the server (`previous_response_id`,
`conversation`, `background`, stored prompts, `item_reference` inputs) and whatever a chat deployment cannot do
(vendor-hosted tools such as web_search, file inputs) is refused with 400 `unsupported_parameter` naming the field,
never silently dropped. Decisions on the fields that map only loosely:

- `developer` messages become `system` ones: most chat vendors know no `developer` role.
- `reasoning` items from a previous turn (the Agents SDK sends its history back) are dropped: they hold the
  previous vendor's private reasoning, which no chat deployment accepts as input; the turn's text and calls stay.
- `reasoning.effort` becomes chat `reasoning_effort` and `text.verbosity` chat `verbosity` (the same knobs, which
  the Agents SDK sets by default for gpt-5 model names): the deployment's vendor honours them or refuses the
  request (a 400 the client sees), as it would on a chat completion. `reasoning.summary` is refused (no chat
  deployment returns reasoning summaries).
- `max_output_tokens` becomes `max_tokens`, the name every seed vendor accepts.
- `store` is accepted and treated as false (nothing is stored); `metadata`, `prompt_cache_key`/`_options`,
  `safety_identifier`, `service_tier` "auto"/"default" and `stream_options` are accepted and not forwarded (they
  change nothing in the answer and several vendors reject unknown fields). `metadata` is echoed in the Response.
- `include`: values about hosted tools (refused anyway) and `reasoning.encrypted_content` (the Agents SDK asks
  for it when it does not store) are accepted; `message.output_text.logprobs` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

UNSUPPORTED = "unsupported_parameter"

# The Response object echoes these request fields (defaults as the real API reports them when absent).
ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
    "temperature": None, "top_p": None, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
    "truncation": "disabled", "reasoning": {"effort": None, "summary": None}, "user": None,
}
_STATEFUL = ("previous_response_id", "conversation", "prompt")
# Fields no chat deployment can honour, with why (refused when set, never dropped).
_UNHONOURABLE = {
    "max_tool_calls": "a chat deployment cannot cap the tool calls of one response",
    "context_management": "server-side context compaction needs stored state",
    "moderation": "moderation policies cannot be honoured across the gateway's vendors",
}
_ACCEPTED_INCLUDES = frozenset({
    "reasoning.encrypted_content", "file_search_call.results", "web_search_call.results",
    "web_search_call.action.sources", "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
})
# Top-level fields this translator reads; anything else is refused (the real API answers "Unknown parameter").
_KNOWN = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature", "top_p",
    "parallel_tool_calls", "text", "metadata", "user", "stream", "store", "include", "truncation", "reasoning",
    "background", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "service_tier",
    "stream_options", "top_logprobs", "prompt_cache_options", "gateway", *_STATEFUL, *_UNHONOURABLE,
})
_ECHOED = frozenset(ECHO_DEFAULTS)
_CHECKED = frozenset({*_STATEFUL, *_UNHONOURABLE, "background", "include", "truncation", "service_tier",
                      "top_logprobs", "store", "metadata"})
_TEXT_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class Translated:
    """A Responses request as the gateway forwards it (`body`, canonical chat) and what its answer echoes."""

    body: dict[str, Any]
    echo: dict[str, Any]
    stream: bool


def unsupported(field: str, why: str) -> BadRequest:
    return BadRequest(f"'{field}' is not supported by this gateway: {why}", code=UNSUPPORTED, param=field)


def _bad(field: str, what: str) -> BadRequest:
    return BadRequest(f"'{field}' {what}", param=field)


def to_chat(body: dict[str, Any]) -> Translated:
    """The chat body for a Responses request (`gateway` constraints, if any, stay for the parser to read)."""
    if not _KNOWN.issuperset(body):
        key = next(k for k in body if k not in _KNOWN)
        raise BadRequest(f"Unknown parameter: '{key}'", code="unknown_parameter", param=key)
    if not _CHECKED.isdisjoint(body):  # the fields most requests never send, checked only when present
        _check_rare(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "is required and must be a string")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "must be a boolean")

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("instructions", "must be a string")
        messages.append({"role": "system", "content": instructions})
    messages.extend(input_messages(body.get("input")))
    if not messages:
        raise _bad("input", "must hold at least one message")

    chat: dict[str, Any] = {"model": model, "messages": messages}
    if "gateway" in body:
        chat["gateway"] = body["gateway"]
    tools = body.get("tools")
    if tools:
        chat["tools"] = chat_tools(tools)
        if body.get("parallel_tool_calls") is not None:  # OpenAI refuses it on a request without tools
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif tools is not None and not isinstance(tools, list):
        raise _bad("tools", "must be an array")
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = chat_tool_choice(body["tool_choice"])
    max_out = body.get("max_output_tokens")
    if max_out is not None:
        if isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1:
            raise _bad("max_output_tokens", "must be a positive integer")
        chat["max_tokens"] = max_out
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(key, "must be a number")
            chat[key] = value
    if isinstance(body.get("user"), str):
        chat["user"] = body["user"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = _reasoning_effort(body.get("reasoning"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    text = body.get("text")
    if isinstance(text, dict) and text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]  # chat's name for the same knob (see the module's docstring)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the Responses stream always ends with usage
    return Translated(chat, _echo(body), bool(stream))


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    echo = ECHO_DEFAULTS.copy()
    for key in _ECHOED.intersection(body):
        if body[key] is not None:
            echo[key] = body[key]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        echo["reasoning"] = {"effort": reasoning.get("effort"), "summary": None}
    return echo


def _check_rare(body: dict[str, Any]) -> None:
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise unsupported(key, "the gateway is stateless and keeps no responses, conversations or prompts")
    for key, why in _UNHONOURABLE.items():
        if body.get(key) is not None:
            raise unsupported(key, why)
    if body.get("background"):
        raise unsupported("background", "the gateway is stateless; background responses need stored state")
    _check_include(body.get("include"))
    _check_minor(body)


def _check_include(include: Any) -> None:
    if include is None:
        return
    if not isinstance(include, list) or not all(isinstance(v, str) for v in include):
        raise _bad("include", "must be an array of strings")
    for value in include:
        if value not in _ACCEPTED_INCLUDES:
            raise unsupported("include", f"'{value}' cannot be provided across the gateway's vendors")


def _check_minor(body: dict[str, Any]) -> None:
    """Fields accepted only in the values every deployment honours."""
    if body.get("truncation") not in (None, "disabled"):
        raise unsupported("truncation", "only 'disabled' is supported (the gateway never drops input items)")
    if body.get("service_tier") not in (None, "auto", "default"):
        raise unsupported("service_tier", "only 'auto' and 'default' are supported")
    if body.get("top_logprobs"):
        raise unsupported("top_logprobs", "log probabilities cannot be provided across the gateway's vendors")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise _bad("store", "must be a boolean")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("metadata", "must be an object")


def _reasoning_effort(reasoning: Any) -> str | None:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise _bad("reasoning", "must be an object")
    if reasoning.get("summary") is not None or reasoning.get("generate_summary") is not None:
        raise unsupported("reasoning.summary", "chat deployments return no reasoning summaries")
    effort = reasoning.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise _bad("reasoning.effort", "must be a string")
    return effort


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("text", "must be an object")
    verbosity = text.get("verbosity")
    if verbosity is not None and not isinstance(verbosity, str):
        raise _bad("text.verbosity", "must be a string")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format", "of type json_schema needs a string 'name' and an object 'schema'")
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("text.format.type", "must be one of 'text', 'json_object', 'json_schema'")


# ---- tools --------------------------------------------------------------------------------------------------------

def chat_tools(tools: Any) -> list[dict[str, Any]]:
    """Responses' flat function tools -> chat's nested ones; any other tool type is refused."""
    if not isinstance(tools, list):
        raise _bad("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise unsupported(f"tools[{i}].type", f"'{kind}' is a vendor-hosted tool; only 'function' tools are "
                                                  "routed across vendors")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"tools[{i}].name", "is required and must be a string")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise unsupported("tool_choice", f"'{kind}' cannot be honoured; use 'auto', 'none', 'required' or "
                                     "{'type': 'function', 'name': ...}")


# ---- input items --------------------------------------------------------------------------------------------------

def input_messages(value: Any) -> list[dict[str, Any]]:
    """`input` (a string or a list of items) -> chat messages, in order. Consecutive `function_call` items (and
    the assistant message just before them) become ONE assistant message with `tool_calls`, as chat wants."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad("input", "must be a string or an array of input items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}]", "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, i))
        elif kind == "function_call":
            call = _tool_call(item, i)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_tool_result(item, i))
        elif kind == "reasoning":
            continue  # see the module's docstring
        elif kind == "item_reference":
            raise unsupported(f"input[{i}].type", "item references need stored responses; send the items")
        else:
            raise unsupported(f"input[{i}].type", f"'{kind}' items belong to vendor-hosted tools")
    return messages


def _message(item: dict[str, Any], i: int) -> dict[str, Any]:
    role = _TEXT_ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise _bad(f"input[{i}].role", "must be one of 'user', 'system', 'developer', 'assistant'")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"input[{i}].content", "must be a string or an array of content parts")
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    has_image = False
    for j, part in enumerate(content):
        where = f"input[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")  # type: ignore[union-attr]
            if not isinstance(text, str):
                raise _bad(f"{where}.text", "must be a string")
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))  # type: ignore[union-attr]
            parts.append({"type": "text", "text": texts[-1]})
        elif kind == "input_image" and role == "user":
            parts.append(_image(part, where))  # type: ignore[arg-type]
            has_image = True
        elif kind in ("input_image", "input_file", "input_audio"):
            raise unsupported(f"{where}.type", f"'{kind}' parts are not supported in a {item.get('role')} message")
        else:
            raise _bad(f"{where}.type", f"'{kind}' is not a known content part type")
    if has_image:
        return {"role": role, "content": parts}
    # Text only: one string, the form every chat vendor accepts (an assistant turn replayed by the Agents SDK
    # carries its output_text parts; the parts of one message are one text).
    return {"role": role, "content": "".join(texts)}


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise unsupported(f"{where}.file_id", "uploaded files are not stored by the gateway; send image_url")
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise _bad(f"{where}.image_url", "is required (an https or data: URL)")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _tool_call(item: dict[str, Any], i: int) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
        raise _bad(f"input[{i}]", "a function_call item needs string 'call_id', 'name' and 'arguments'")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_result(item: dict[str, Any], i: int) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise _bad(f"input[{i}].call_id", "is required and must be a string")
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") != "input_text" or not isinstance(part.get("text"), str):
                raise unsupported(f"input[{i}].output[{j}]", "function outputs may hold only input_text parts")
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        raise _bad(f"input[{i}].output", "must be a string or an array of input_text parts")
    return {"role": "tool", "tool_call_id": call_id, "content": output}
