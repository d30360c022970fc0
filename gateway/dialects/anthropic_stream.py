"""Anthropic Messages streams <-> chat-completion chunks, both directions, as pure state machines.

- `MessagesEncoder` (client side): the canonical chat chunks of a stream -> the Anthropic event sequence a
  /v1/messages client reads: `message_start`, per block `content_block_start` / `content_block_delta`
  (text_delta, input_json_delta, thinking_delta) / `content_block_stop`, then `message_delta` (stop_reason and
  the cumulative usage) and `message_stop`. Each event is framed with its `event:` line, which the Anthropic SDKs
  dispatch on (an event without one is skipped). A failure after the first byte ends the stream with
  `event: error`, and nothing after it.
- `ChunksFromEvents` (vendor side): an Anthropic-format vendor's events -> chat chunks, ending with the usage
  chunk (`choices: []`) and `[DONE]` at `message_stop`, so the relay and the meter see an ordinary chat stream.
- `NativeStream` (pass-through): the vendor's own events to the client, metered (message_start's input and cache
  counts, overwritten by message_delta's cumulative ones); `native_usage` is the same rule over a list.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.decisions.fallback import BAD_RESPONSE, HTTP_5XX, RATE_LIMITED
from gateway.dialects.anthropic import FINISH_REASON, STOP_REASON, anthropic_usage, message_id, usage_from_anthropic
from gateway.dialects.anthropic_vendor import chat_usage
from gateway.domain import Usage
from gateway.metering import usage_from_payload
from gateway.providers.base import UpstreamFailure
from gateway.providers.sse import DONE
from gateway.tokens import TokenCounter


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(message: str, type_: str = "api_error") -> bytes:
    return event("error", {"type": "error", "error": {"type": type_, "message": message}})


def error_type(kind: str) -> str:
    """The Anthropic error type of a mid-stream failure of the gateway's `kind` (rate_limited, http_5xx, ...)."""
    return {RATE_LIMITED: "rate_limit_error", HTTP_5XX: "overloaded_error"}.get(kind, "api_error")


class MessagesEncoder:
    """Chat chunk payloads in, Anthropic SSE bytes out (client side)."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.started = False
        self.done = False  # the terminal events (or the error tail) went out: nothing more is sent
        self.usage: Usage | None = None
        self.stop_reason: str | None = None
        self._blocks = 0  # blocks started so far (the next block's index)
        self._open: tuple[str, Any] | None = None  # (kind, key) of the open block: text / thinking / tool index
        self._tool_block: dict[int, int] = {}  # chat tool_call index -> block index

    def _start(self, obj: dict[str, Any]) -> bytes:
        self.started = True
        message: dict[str, Any] = {"id": message_id(obj.get("id")), "type": "message", "role": "assistant",
                   "model": self.model or obj.get("model") or "", "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": anthropic_usage(None)}
        return event("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})

    def _open_block(self, kind: str, key: Any, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._open = (kind, key)
        self._blocks += 1
        return out + event("content_block_start", {"type": "content_block_start", "index": self._blocks - 1,
                                                   "content_block": block})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        # The hottest event (one per chunk): framed by hand, the delta alone serialised.
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":' + str(index).encode()
                + b',"delta":' + orjson.dumps(delta) + b"}\n\n")

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open != (kind, None):
            block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                         "signature": ""}
            out = self._open_block(kind, None, block)
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta",
                                                                             "thinking": text}
        return out + self._delta(self._blocks - 1, delta)

    def _tool(self, call: dict[str, Any]) -> bytes:
        idx = call.get("index", 0)
        fn = call.get("function") or {}
        out = b""
        if idx not in self._tool_block:
            out = self._open_block("tool", idx, {"type": "tool_use", "id": call.get("id") or f"toolu_{idx}",
                                                 "name": fn.get("name") or "", "input": {}})
            self._tool_block[idx] = self._blocks - 1
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out += self._delta(self._tool_block[idx], {"type": "input_json_delta", "partial_json": args})
        return out

    def feed(self, payload: bytes) -> bytes:
        """One chat chunk payload (or `[DONE]`) -> the Anthropic events it makes."""
        if self.done:
            return b""
        if payload == DONE:
            return self.finish()
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        out = b"" if self.started else self._start(obj)
        if b'"usage"' in payload:  # most chunks carry none (or `"usage":null`): skip the lookup
            usage = usage_from_payload(obj)
            if usage is not None:
                self.usage = usage
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
                out += self._text("thinking", delta["reasoning_content"])
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._text("text", delta["content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out += self._tool(call)
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASON.get(choice["finish_reason"], "end_turn")
        return out

    def encode(self, payloads: list[bytes]) -> bytes:
        return b"".join(map(self.feed, payloads))

    def finish(self, usage: Usage | None = None) -> bytes:
        """The terminal events: close the open block, `message_delta` with stop_reason and usage, `message_stop`.
        `usage` (the gateway's metered usage) wins over what the stream carried."""
        if self.done:
            return b""
        out = b"" if self.started else self._start({})
        self.done = True
        out += self._close_block()
        stop = self.stop_reason or "end_turn"
        if stop == "end_turn" and self._tool_block:
            stop = "tool_use"  # some vendors say `stop` after tool calls; a Messages client then runs the tools
        out += event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": anthropic_usage(usage or self.usage)})
        return out + event("message_stop", {"type": "message_stop"})

    def fail(self, message: str, kind: str = "") -> bytes:
        """The error tail of a stream that failed after its first byte (`kind`: the gateway's failure kind)."""
        if self.done:
            return b""
        self.done = True
        return error_event(message, error_type(kind))


# ---- vendor side ------------------------------------------------------------------------------------------------

_ERROR_KIND = {"overloaded_error": HTTP_5XX, "api_error": HTTP_5XX, "rate_limit_error": RATE_LIMITED}


class ChunksFromEvents:
    """An Anthropic-format vendor's event payloads in, chat chunk payloads out (ending with usage and [DONE])."""

    def __init__(self, json_tool: str | None = None) -> None:
        self.json_tool = json_tool
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # block index -> chat tool_call index
        self._json_blocks: set[int] = set()
        self.pending: UpstreamFailure | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return orjson.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def _block_start(self, ev: dict[str, Any]) -> list[bytes]:
        block, index = ev.get("content_block") or {}, ev.get("index", 0)
        if block.get("type") != "tool_use":
            return []
        if self.json_tool is not None and block.get("name") == self.json_tool:
            self._json_blocks.add(index)
            return []
        n = self._tools[index] = len(self._tools)
        call = {"index": n, "id": block.get("id") or "", "type": "function",
                "function": {"name": block.get("name") or "", "arguments": ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, ev: dict[str, Any]) -> list[bytes]:
        delta, index = ev.get("delta") or {}, ev.get("index", 0)
        kind = delta.get("type")
        if kind == "text_delta":
            if self.json_tool is not None:
                return []  # a forced JSON answer is the tool's input alone
            return [self._chunk({"content": delta.get("text") or ""})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking") or ""})]
        if kind == "input_json_delta":
            partial = delta.get("partial_json") or ""
            if index in self._json_blocks:
                return [self._chunk({"content": partial})] if partial else []
            if index in self._tools:
                return [self._chunk({"tool_calls": [{"index": self._tools[index],
                                                     "function": {"arguments": partial}}]})]
        return []

    def feed(self, payload: bytes) -> list[bytes]:
        """One vendor event payload -> the chat chunk payloads it makes (`[DONE]` after `message_stop`)."""
        try:
            ev = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(BAD_RESPONSE, status=200) from None
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind == "message_start":
            msg = ev.get("message") or {}
            self.id, self.model = msg.get("id") or "", msg.get("model") or ""
            self.usage.update({k: v for k, v in (msg.get("usage") or {}).items() if v is not None})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(ev)
        if kind == "content_block_delta":
            return self._block_delta(ev)
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
            reason = (ev.get("delta") or {}).get("stop_reason")
            if reason is None:
                return []
            finish = FINISH_REASON.get(reason, "stop")
            if finish == "tool_calls" and not self._tools:
                finish = "stop"  # the forced JSON tool: its input was the text
            return [self._chunk({}, finish)]
        if kind == "message_stop":
            usage = orjson.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                  "model": self.model, "choices": [], "usage": chat_usage(self.usage)})
            return [usage, DONE]
        if kind == "error":
            err = ev.get("error") or {}
            raise UpstreamFailure(_ERROR_KIND.get(str(err.get("type")), BAD_RESPONSE),
                                  message=str(err.get("message", "")))
        return []  # ping, content_block_stop, and event types added later

    def feed_batch(self, batch: list[bytes]) -> list[bytes]:
        """`feed` each payload. A failure after some output is held back (`pending`) so that output still goes
        out: `raise_pending` raises it on the next batch or at the end of the stream."""
        self.raise_pending()
        out: list[bytes] = []
        for payload in batch:
            try:
                out.extend(self.feed(payload))
            except UpstreamFailure as f:
                if not out:
                    raise
                self.pending = f
                break
        return out

    def raise_pending(self) -> None:
        if self.pending is not None:
            failure, self.pending = self.pending, None
            raise failure


def merge_usage(merged: dict[str, Any], payload: bytes) -> None:
    """Fold one Anthropic event's usage into `merged`: message_start's counts, overwritten by each message_delta's
    cumulative ones (a null count leaves the earlier one)."""
    try:
        ev = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    if not isinstance(ev, dict):
        return
    u = (ev.get("message") or {}).get("usage") if ev.get("type") == "message_start" else ev.get("usage")
    if isinstance(u, dict):
        merged.update({k: v for k, v in u.items() if v is not None})


def native_usage(payloads: list[bytes]) -> Usage | None:
    """The usage of a passed-through Anthropic stream's payloads."""
    merged: dict[str, Any] = {}
    for payload in payloads:
        if b'"usage"' in payload:
            merge_usage(merged, payload)
    return usage_from_anthropic(merged) if merged else None


# ---- pass-through ---------------------------------------------------------------------------------------------

def _type_of(payload: bytes) -> bytes | None:
    """The event type of an Anthropic payload: read off its first key when it leads (as every vendor writes it),
    else parsed."""
    if payload.startswith(b'{"type":"'):
        end = payload.find(b'"', 9)
        if end > 9:
            return payload[9:end]
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind.encode() if isinstance(kind, str) else None


class NativeStream:
    """The relay's `ClientStream` for a pass-through: the vendor's own event payloads, re-framed with their
    `event:` lines (the SSE splitter keeps only `data:`), usage read from message_start and message_delta.
    A vendor `error` event fails the request like any mid-stream failure (billed as such, one error event)."""

    def __init__(self) -> None:
        self.done = False
        self._usage: dict[str, Any] = {}
        self._deltas: list[bytes] = []
        self._pending = b""
        self._vendor_error: str | None = None

    def relay(self, batch: list[bytes]) -> bytes:
        out: list[bytes] = []
        for payload in batch:
            kind = _type_of(payload)
            if kind == b"content_block_delta":
                self._deltas.append(payload)
            elif kind == b"error":
                self._pending = b"".join(out)
                err: dict[str, Any] = {}
                try:
                    err = orjson.loads(payload).get("error") or {}
                except (orjson.JSONDecodeError, AttributeError):
                    pass
                self._vendor_error = err.get("type") if isinstance(err.get("type"), str) else None
                raise UpstreamFailure(_ERROR_KIND.get(self._vendor_error or "", BAD_RESPONSE),
                                      message=str(err.get("message", "")))
            elif b'"usage"' in payload:
                merge_usage(self._usage, payload)
            if kind == b"message_stop":
                self.done = True
            out.append((b"event: " + kind + b"\ndata: " if kind else b"data: ") + payload + b"\n\n")
        return b"".join(out)

    def ended(self, batch: list[bytes]) -> bool:
        return self.done

    def finish(self) -> bytes:
        return b""  # the vendor's stream ended without message_stop: nothing of ours to add to its events

    def fail(self, message: str, kind: str) -> bytes:
        tail, self._pending = self._pending, b""
        return tail + error_event(message, self._vendor_error or error_type(kind))

    def final_usage(self, prompt_estimate: int, counter: TokenCounter) -> Usage:
        usage = usage_from_anthropic(self._usage) if self._usage else None
        if usage is not None:
            return usage
        parts: list[str] = []
        for payload in self._deltas:
            try:
                delta = orjson.loads(payload).get("delta") or {}
            except (orjson.JSONDecodeError, AttributeError):
                continue
            for key in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(key), str):
                    parts.append(delta[key])
        return Usage(prompt_estimate, 0, counter.count_text("".join(parts)), source="estimated")
