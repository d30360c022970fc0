"""What the simulated model answers to a chat request: text, tool calls, or JSON (pure functions, no I/O).

The rule, in order (the same on the chat endpoints and the Anthropic one):

1. Tools offered and `tool_choice` forces a call (`"required"`, or a named function): call that function
   (`required`: the tool the rule in 3 picks, else the first).
2. `tool_choice: "none"`, or no tools: no call.
3. Otherwise (`auto`), call a tool when the LAST message is the user's and its text names a tool (its name,
   with `_` read as a space, case-insensitive) or contains one of the words use / call / tool / weather / search
   / lookup. It calls every tool it names (parallel calls, unless `parallel_tool_calls` is false), else the
   tool whose name or description shares a word with the text, else the first tool. After a tool result the
   last message is not the user's, so the model answers in text, quoting the result.
4. `response_format` `json_schema`: a JSON document generated from the schema (`schema_values`);
   `json_object`: a JSON object with the answer in it. Otherwise the usual deterministic text reply.

Arguments are JSON generated from the tool's `parameters` schema (every property, plausible values: a `city`
is the city the user named). Everything is deterministic: the call id follows the request id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.demo import textsim
from gateway.demo.schema_values import value_for

TRIGGER_WORDS = frozenset({"use", "call", "tool", "tools", "weather", "search", "lookup"})
_WORD_RE = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as vendors send it


@dataclass(frozen=True)
class Answer:
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish: str  # stop, length or tool_calls
    output_tokens: int
    pieces: tuple[str, ...] = ()  # the content's tokens as generated (streams send them in groups)


class BadToolRequest(ValueError):
    """`tools` / `tool_choice` / `response_format` a vendor would refuse with a 400."""


def function_tools(tools: Any) -> list[dict[str, Any]]:
    """The `function` objects of OpenAI-format `tools`; BadToolRequest when malformed."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadToolRequest("tools must be an array")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadToolRequest(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        out.append(fn)
    return out


def _words(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.lower()))


def _mentions(text: str, name: str) -> bool:
    lowered = text.lower()
    return name.lower() in lowered or name.lower().replace("_", " ") in lowered


def chosen_tools(fns: list[dict[str, Any]], messages: list[dict[str, Any]], tool_choice: Any,
                 parallel: bool = True) -> list[dict[str, Any]]:
    """The functions the model calls now (rules 1-3 of the module docstring); [] for a text answer."""
    if not fns or tool_choice == "none":
        return []
    by_name = {fn["name"]: fn for fn in fns}
    if isinstance(tool_choice, dict):
        fn_choice = tool_choice.get("function")
        name = fn_choice.get("name") if isinstance(fn_choice, dict) else tool_choice.get("name")
        if name not in by_name:
            raise BadToolRequest(f"tool_choice names {name!r}, which is not among the tools")
        return [by_name[name]]
    last = messages[-1] if messages else {}
    text = textsim.content_text(last.get("content"))[0] if last.get("role") == "user" else ""
    named = [fn for fn in fns if _mentions(text, fn["name"])]
    if tool_choice != "required" and not named and not (_words(text) & TRIGGER_WORDS):
        return []
    if named:
        return named if parallel else named[:1]
    words = _words(text)
    related = [fn for fn in fns if words & _words(fn["name"].replace("_", " ") + " " + str(fn.get("description", "")))]
    return [(related or fns)[0]]


def tool_result_reply(model: str, messages: list[dict[str, Any]]) -> str | None:
    """The text answer after tool results: names each tool and quotes what it returned."""
    results = []
    for msg in reversed(messages):
        if msg.get("role") != "tool":
            break
        results.append(textsim.content_text(msg.get("content"))[0])
    if not results:
        return None
    names = {c.get("id"): c.get("function", {}).get("name", "tool")
             for m in messages if m.get("role") == "assistant" for c in (m.get("tool_calls") or ())
             if isinstance(c, dict)}
    ids = [m.get("tool_call_id") for m in messages[len(messages) - len(results):]]
    quoted = "; ".join(f"{names.get(i, 'the tool')} returned {r[:80]}" for i, r in zip(ids, reversed(results)))
    return f"[{model}] Based on the tool results: {quoted}."


def json_answer(response_format: Any, model: str, hint: str) -> str | None:
    """The JSON text for `response_format` json_schema / json_object; None for plain text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return orjson.dumps({"answer": f"[{model}] reply to: {hint[:40]}", "model": model}).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadToolRequest("response_format.json_schema.schema must be an object")
        return orjson.dumps(value_for(schema, hint)).decode()
    return None


def decide(body: dict[str, Any], model: str, call_prefix: str, max_tokens: int | None) -> Answer:
    """The answer to an OpenAI-format chat body (messages already checked to be a list of objects)."""
    messages: list[dict[str, Any]] = body["messages"]
    fns = function_tools(body.get("tools"))
    hint = textsim.last_user_text(messages)
    calls = chosen_tools(fns, messages, body.get("tool_choice"), body.get("parallel_tool_calls") is not False)
    if calls:
        made = tuple(ToolCall(f"call_{call_prefix}_{i}", fn["name"],
                              orjson.dumps(value_for(fn.get("parameters") or {"type": "object"}, hint)).decode())
                     for i, fn in enumerate(calls))
        tokens = sum(textsim.count_tokens(c.name + c.arguments) for c in made)
        return Answer(None, made, "tool_calls", tokens)
    text = tool_result_reply(model, messages) or json_answer(body.get("response_format"), model, hint)
    if text is None:
        n_out, finish = textsim.output_tokens(max_tokens)
        reply = textsim.reply_pieces(model, hint, n_out)
        return Answer("".join(reply), (), finish, n_out, tuple(reply))
    pieces = textsim.token_pieces(text)
    if max_tokens is not None and len(pieces) > max_tokens:
        return Answer("".join(pieces[:max_tokens]), (), "length", max_tokens, tuple(pieces[:max_tokens]))
    return Answer(text, (), "stop", len(pieces), tuple(pieces))


def message(answer: Answer) -> dict[str, Any]:
    """The non-streamed `choices[0].message`."""
    msg: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.tool_calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in answer.tool_calls]
    return msg


def stream_deltas(answer: Answer, max_chunks: int) -> list[tuple[dict[str, Any], int]]:
    """The content deltas of a stream after the role chunk, each with the output tokens sent so far.

    Tool calls stream as OpenAI's do: a delta opening each call (index, id, type, name, empty arguments), then
    the arguments in pieces under the same index.
    """
    if not answer.tool_calls:
        pieces = list(answer.pieces) or textsim.token_pieces(answer.content or "")
        size = max(1, -(-len(pieces) // max_chunks))
        groups = [pieces[i : i + size] for i in range(0, len(pieces), size)]
        out, sent = [], 0
        for group in groups:
            sent += len(group)
            out.append(({"content": "".join(group)}, min(sent, answer.output_tokens)))
        return out
    out2: list[tuple[dict[str, Any], int]] = []
    sent = 0
    for index, call in enumerate(answer.tool_calls):
        sent += textsim.count_tokens(call.name)
        opening = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        out2.append(({"tool_calls": [opening]}, sent))
        args = call.arguments
        step = max(1, -(-len(args) // 4))
        for i in range(0, len(args), step):
            sent += textsim.count_tokens(args[i : i + step])
            out2.append(({"tool_calls": [{"index": index, "function": {"arguments": args[i : i + step]}}]},
                         min(sent, answer.output_tokens)))
    return out2
