"""Types and ranges of every field the gateway forwards (contract 4: wrong types are a 400, never sent upstream).

A hand-written check over the dict `orjson` parsed, not a pydantic model of whole bodies: it runs on the hot path,
so each field costs one dict lookup and a type test (a typical ~1 KB chat body: a few microseconds, see
`tests/perf/validate_bench.py`). Fields the gateway does not know are forwarded unchecked (vendors have their own
extensions), but no part of a body may nest deeper than `MAX_DEPTH`: the encoder that forwards it stops at 254.

Rules follow the OpenAI API reference for chat completions and embeddings. Each refusal is a `BadRequest` naming
the field as `param` (`messages[2].content[0].type`, `tools[0].function.name`, ...).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from gateway.errors import BadRequest

MAX_DEPTH = 128
MAX_MODEL_NAME = 256
MAX_STOP = 4
MAX_N = 128
MAX_TOOLS = 128
MAX_TOKENS = 2**31 - 1
MAX_EMBEDDING_ITEMS = 2048
SEED_RANGE = (-(2**63), 2**63 - 1)

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_FORMATS = frozenset({"text", "json_object", "json_schema"})


def _fail(param: str, what: str) -> BadRequest:
    return BadRequest(f"'{param}' {what}", param=param)


# ---- scalars ----------------------------------------------------------------------------------------------------

def _number(value: Any, param: str, low: float, high: float) -> None:
    t = type(value)
    if t is not float and t is not int:  # bool is a subclass of int, not int itself
        raise _fail(param, f"must be a number between {low:g} and {high:g}")
    if not low <= value <= high:
        raise _fail(param, f"must be between {low:g} and {high:g}")


def _integer(value: Any, param: str, low: int, high: int) -> None:
    if type(value) is not int:
        raise _fail(param, f"must be an integer between {low} and {high}")
    if not low <= value <= high:
        raise _fail(param, f"must be between {low} and {high}")


def _string(value: Any, param: str) -> None:
    if type(value) is not str:
        raise _fail(param, "must be a string")


def _boolean(value: Any, param: str) -> None:
    if type(value) is not bool:
        raise _fail(param, "must be a boolean")


def _object(value: Any, param: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _fail(param, "must be an object")
    return value


# ---- messages -----------------------------------------------------------------------------------------------------

def _parts(content: list[Any], role: str, param: str) -> None:
    allowed = _PART_TYPES[role]
    for j, part in enumerate(content):
        if type(part) is not dict:
            raise _fail(f"{param}[{j}]", "must be a content part object")
        kind = part.get("type")
        if type(kind) is not str or kind not in allowed:
            raise _fail(f"{param}[{j}].type", f"must be one of {', '.join(sorted(allowed))} for a {role} message")
        if kind == "text" or kind == "refusal":
            if type(part.get(kind)) is not str:
                raise _fail(f"{param}[{j}].{kind}", "must be a string")
        elif kind == "image_url":
            image = part.get("image_url")
            if type(image) is str:
                continue
            if type(image) is not dict or type(image.get("url")) is not str:
                raise _fail(f"{param}[{j}].image_url.url", "must be a string")
        elif type(part.get(kind)) is not dict:
            raise _fail(f"{param}[{j}].{kind}", "must be an object")


def _tool_calls(calls: Any, param: str) -> None:
    if type(calls) is not list:
        raise _fail(param, "must be an array of tool calls")
    for j, call in enumerate(calls):
        if type(call) is not dict:
            raise _fail(f"{param}[{j}]", "must be a tool call object")
        if type(call.get("id")) is not str:
            raise _fail(f"{param}[{j}].id", "must be a string")
        function = call.get("function")
        if type(function) is not dict:
            raise _fail(f"{param}[{j}].function", "must be an object with name and arguments")
        if type(function.get("name")) is not str:
            raise _fail(f"{param}[{j}].function.name", "must be a string")
        if type(function.get("arguments")) is not str:
            raise _fail(f"{param}[{j}].function.arguments", "must be a string (JSON text)")


def _message(m: Any, i: int) -> None:
    if type(m) is not dict:
        raise _fail(f"messages[{i}]", "must be a message object")
    role = m.get("role")
    if type(role) is not str or role not in _ROLES:
        raise _fail(f"messages[{i}].role", f"must be one of {', '.join(sorted(_ROLES))}")
    content: Any = m.get("content")
    t = type(content)
    if t is list:
        _parts(content, role, f"messages[{i}].content")
    elif t is not str:
        # An assistant turn that only calls tools (or a legacy function) carries no content.
        if not (role == "assistant" and content is None and ("tool_calls" in m or "function_call" in m
                                                             or "content" in m)):
            raise _fail(f"messages[{i}].content", "must be a string or an array of content parts")
    if len(m) > 2 or t is not str and t is not list:  # anything besides role and content
        name = m.get("name")
        if name is not None and type(name) is not str:
            raise _fail(f"messages[{i}].name", "must be a string")
        if "tool_calls" in m and m["tool_calls"] is not None:
            if role != "assistant":
                raise _fail(f"messages[{i}].tool_calls", "is only allowed on assistant messages")
            _tool_calls(m["tool_calls"], f"messages[{i}].tool_calls")
        if role == "tool" and type(m.get("tool_call_id")) is not str:
            raise _fail(f"messages[{i}].tool_call_id", "must be a string (the id of the call it answers)")
    elif role == "tool":
        raise _fail(f"messages[{i}].tool_call_id", "must be a string (the id of the call it answers)")


def check_messages(messages: Any) -> None:
    if type(messages) is not list or not messages:
        raise _fail("messages", "must be a non-empty array of message objects")
    for i, m in enumerate(messages):
        _message(m, i)


# ---- the other chat fields ------------------------------------------------------------------------------------

def _tools(value: Any, param: str) -> None:
    if type(value) is not list:
        raise _fail(param, "must be an array of tools")
    if len(value) > MAX_TOOLS:
        raise _fail(param, f"must have at most {MAX_TOOLS} tools")
    for i, tool in enumerate(value):
        if type(tool) is not dict:
            raise _fail(f"{param}[{i}]", "must be a tool object")
        if tool.get("type", "function") != "function":
            raise _fail(f"{param}[{i}].type", "must be 'function'")
        function = tool.get("function")
        if type(function) is not dict:
            raise _fail(f"{param}[{i}].function", "must be an object")
        _function(function, f"{param}[{i}].function")


def _function(function: dict[str, Any], param: str) -> None:
    name = function.get("name")
    if type(name) is not str or not _TOOL_NAME.match(name):
        raise _fail(f"{param}.name", "must be 1-64 letters, digits, '_' or '-'")
    if "description" in function and type(function["description"]) is not str:
        raise _fail(f"{param}.description", "must be a string")
    if "parameters" in function and type(function["parameters"]) is not dict:
        raise _fail(f"{param}.parameters", "must be a JSON Schema object")
    if "strict" in function and function["strict"] is not None and type(function["strict"]) is not bool:
        raise _fail(f"{param}.strict", "must be a boolean")


def _functions(value: Any, param: str) -> None:  # the deprecated form of tools
    if type(value) is not list:
        raise _fail(param, "must be an array of functions")
    for i, function in enumerate(value):
        _function(_object(function, f"{param}[{i}]"), f"{param}[{i}]")


def _tool_choice(value: Any, param: str) -> None:
    if type(value) is str:
        if value not in _TOOL_CHOICES:
            raise _fail(param, "must be none, auto, required or a tool object")
        return
    choice = _object(value, param)
    if type(choice.get("type")) is not str:
        raise _fail(f"{param}.type", "must be a string")
    if choice["type"] == "function":
        function = choice.get("function")
        if type(function) is not dict or type(function.get("name")) is not str:
            raise _fail(f"{param}.function.name", "must be a string")


def _function_call(value: Any, param: str) -> None:
    if type(value) is str:
        if value not in ("none", "auto"):
            raise _fail(param, "must be none, auto or {\"name\": ...}")
        return
    if type(_object(value, param).get("name")) is not str:
        raise _fail(f"{param}.name", "must be a string")


def _stop(value: Any, param: str) -> None:
    if type(value) is str:
        return
    if type(value) is not list or len(value) > MAX_STOP or any(type(s) is not str for s in value):
        raise _fail(param, f"must be a string or an array of at most {MAX_STOP} strings")


def _logit_bias(value: Any, param: str) -> None:
    for token, bias in _object(value, param).items():
        if not token.isdigit():
            raise _fail(param, "keys must be token ids (digits)")
        _number(bias, f"{param}.{token}", -100, 100)


def _response_format(value: Any, param: str) -> None:
    fmt = _object(value, param)
    kind = fmt.get("type")
    if type(kind) is not str or kind not in _FORMATS:
        raise _fail(f"{param}.type", "must be text, json_object or json_schema")
    if kind == "json_schema":
        schema = fmt.get("json_schema")
        if type(schema) is not dict or type(schema.get("name")) is not str:
            raise _fail(f"{param}.json_schema.name", "must be a string")
        if "schema" in schema and type(schema["schema"]) is not dict:
            raise _fail(f"{param}.json_schema.schema", "must be a JSON Schema object")


def _stream_options(value: Any, param: str) -> None:
    opts = _object(value, param)
    if "include_usage" in opts:
        _boolean(opts["include_usage"], f"{param}.include_usage")


def _metadata(value: Any, param: str) -> None:
    for k, v in _object(value, param).items():
        if type(v) is not str:
            raise _fail(f"{param}.{k}", "must be a string")


Check = Callable[[Any, str], None]


def _range(low: float, high: float) -> Check:
    return lambda value, param: _number(value, param, low, high)


def _int_range(low: int, high: int) -> Check:
    return lambda value, param: _integer(value, param, low, high)


_CHAT: dict[str, Check] = {
    "temperature": _range(0, 2),
    "top_p": _range(0, 1),
    "n": _int_range(1, MAX_N),
    "max_tokens": _int_range(0, MAX_TOKENS),
    "max_completion_tokens": _int_range(0, MAX_TOKENS),
    "presence_penalty": _range(-2, 2),
    "frequency_penalty": _range(-2, 2),
    "seed": _int_range(*SEED_RANGE),
    "top_logprobs": _int_range(0, 20),
    "stop": _stop,
    "logit_bias": _logit_bias,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "functions": _functions,
    "function_call": _function_call,
    "response_format": _response_format,
    "stream": _boolean,
    "stream_options": _stream_options,
    "logprobs": _boolean,
    "parallel_tool_calls": _boolean,
    "store": _boolean,
    "user": _string,
    "metadata": _metadata,
}


def _embedding_input(value: Any, param: str) -> None:
    if type(value) is str:
        return
    if type(value) is not list or not value:
        raise _fail(param, "must be a string or a non-empty array of strings or token ids")
    if len(value) > MAX_EMBEDDING_ITEMS:
        raise _fail(param, f"must have at most {MAX_EMBEDDING_ITEMS} items")
    first = type(value[0])
    if first is str or first is int:
        if any(type(v) is not first for v in value):
            raise _fail(param, "must be an array of strings, or of token ids, not a mixture")
        return
    for i, item in enumerate(value):  # an array of token-id arrays
        if type(item) is not list or not item or any(type(t) is not int for t in item):
            raise _fail(f"{param}[{i}]", "must be a string, a token id, or a non-empty array of token ids")


def _encoding_format(value: Any, param: str) -> None:
    if type(value) is not str or value not in ("float", "base64"):
        raise _fail(param, "must be float or base64")


_EMBEDDING: dict[str, Check] = {
    "input": _embedding_input,
    "encoding_format": _encoding_format,
    "dimensions": _int_range(1, 1_000_000),
    "user": _string,
}


# ---- whole bodies ---------------------------------------------------------------------------------------------

def check_model(value: Any) -> str:
    if type(value) is not str or not value:
        raise BadRequest("'model' is required and must be a string", param="model")
    if len(value) > MAX_MODEL_NAME:
        raise BadRequest(f"'model' must be at most {MAX_MODEL_NAME} characters", param="model")
    return value


def check_depth(body: dict[str, Any], raw: bytes | None = None) -> None:
    """No container deeper than MAX_DEPTH anywhere (iterative: a hostile body cannot exhaust the stack). A body
    whose text has no more than MAX_DEPTH brackets in all cannot nest deeper: counting them in C is the fast path
    that spares the walk for nearly every request."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    stack: list[tuple[Any, int]] = [(body, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        obj, depth = pop()
        for v in (obj.values() if type(obj) is dict else obj):
            t = type(v)
            if t is dict or t is list:
                if depth >= MAX_DEPTH:
                    raise BadRequest(f"the request nests deeper than {MAX_DEPTH} levels")
                push((v, depth + 1))


def _check_fields(body: dict[str, Any], checks: dict[str, Check]) -> None:
    get = checks.get
    for name, value in body.items():
        check = get(name)
        if check is not None and value is not None:
            check(value, name)


def check_chat(body: dict[str, Any], raw: bytes | None = None) -> None:
    """Raise BadRequest for the first field of a chat-completions body that has a wrong type or range. `raw`, the
    text `body` was parsed from, lets the nesting check skip its walk when the text is shallow enough anyway."""
    check_messages(body.get("messages"))
    _check_fields(body, _CHAT)
    check_depth(body, raw)


def check_embedding(body: dict[str, Any], raw: bytes | None = None) -> None:
    if body.get("input") is None:
        raise _fail("input", "is required: a string or a non-empty array")
    _check_fields(body, _EMBEDDING)
    check_depth(body, raw)
