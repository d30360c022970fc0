"""Chat-completion chunks -> the Responses API's SSE event sequence (pure: bytes in, bytes out, no I/O).

One `ResponsesEncoder` (a `StreamEncoder`, gateway/dialects/base.py) follows one stream. `encode` takes the vendor's chat-chunk payloads (the `data:` contents, as
the relay reads them, `[DONE]` included) and returns the client's SSE bytes; every frame has an `event:` line and
a `sequence_number` that counts from 0. The sequence, as the real API sends it:

    response.created, response.in_progress                      (before the first output)
    per item, in output order: response.output_item.added,
        text:      response.content_part.added, response.output_text.delta..., response.output_text.done,
                   response.content_part.done
        reasoning: the same with response.reasoning_text.delta / .done (a reasoning vendor's reasoning_content)
        call:      response.function_call_arguments.delta..., response.function_call_arguments.done
    response.output_item.done
    response.completed (status completed, usage) | response.incomplete (finish_reason length / content_filter)

A stream that fails after its first byte ends with `response.failed` (status failed, `error` set, the output so
far with status incomplete): the event the OpenAI Agents SDK turns into an error and the SDK's stream helpers
report, where a bare `{"error": ...}` frame would be raised mid-iteration without the partial response.
`finish` ends a stream the vendor ended without `[DONE]`; after a terminal event nothing more is sent.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.domain import Usage
from gateway.dialects import responses_output as out
from gateway.metering import usage_from_payload
from gateway.providers.sse import DONE

_DELTA_EVENTS = {"message": "response.output_text.delta", "reasoning": "response.reasoning_text.delta",
                 "function_call": "response.function_call_arguments.delta"}


def sse_event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class _Item:
    """One output item being streamed: its kind, its place in `output`, its id and the text gathered so far."""

    __slots__ = ("kind", "index", "id", "parts", "call_id", "name", "done", "delta_head")

    def __init__(self, kind: str, index: int, item_id: str, call_id: str = "", name: str = "") -> None:
        self.kind, self.index, self.id = kind, index, item_id
        self.parts: list[str] = []
        self.call_id, self.name = call_id, name
        self.done = False
        # A delta event is most of a stream: its frame up to the delta text is encoded once per item.
        event = _DELTA_EVENTS[kind]
        head = {"type": event, "item_id": item_id, "output_index": index}
        if kind != "function_call":
            head["content_index"] = 0
        if kind == "message":
            head["logprobs"] = []
        self.delta_head = (b"event: " + event.encode() + b"\ndata: " + orjson.dumps(head)[:-1]
                           + b',"delta":')

    def snapshot(self, response_id: str, status: str) -> dict[str, Any]:
        text = "".join(self.parts)
        if self.kind == "message":
            return out.message_item(response_id, self.index, text, None, status)
        if self.kind == "reasoning":
            return out.reasoning_item(response_id, self.index, text, status)
        return out.function_call_item(response_id, self.index, self.call_id, self.name, text, status)


class ResponsesEncoder:
    def __init__(self, echo: dict[str, Any], response_id: str, model: str, created_at: int | None = None) -> None:
        self.echo = echo
        self.response_id = response_id
        self.model = model
        self.created_at = created_at if created_at is not None else int(time.time())
        self.seq = 0
        self.started = False
        self.done = False  # the terminal event went out: the client's answer is complete
        self.items: list[_Item] = []
        self.text: _Item | None = None
        self.reasoning: _Item | None = None
        self.calls: dict[int, _Item] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.reasoning_tokens = 0
        self._buf: list[bytes] = []

    # ---- the relay's calls ------------------------------------------------------------------------------------

    def encode(self, payloads: list[bytes]) -> bytes:
        """A batch of chat-chunk payloads -> the Responses SSE bytes for it (b"" when it adds nothing)."""
        for data in payloads:
            if self.done:
                break
            if data == DONE:
                self._complete(None)
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue  # not a chunk (a vendor's stray line): nothing a client could use
            if chunk.__class__ is dict:
                self._chunk(chunk)
        return self._flush() if self._buf else b""

    def finish(self, usage: Usage | None = None) -> bytes:
        """The vendor's stream ended (with or without `[DONE]`): the terminal event if not yet sent. `usage` is the
        gateway's metered usage, used when the vendor reported none."""
        if not self.done:
            self._complete(usage)
        return self._flush()

    def fail(self, message: str, kind: str = "") -> bytes:
        """The vendor failed after the first byte (`kind`: the gateway's failure kind): `response.failed`, with
        the partial output."""
        if not self.done:
            self._fail(message, "rate_limit_exceeded" if kind == "rate_limited" else "server_error")
        return self._flush()

    def _fail(self, message: str, code: str) -> None:
        self._start()
        self.done = True
        output = [item.snapshot(self.response_id, "incomplete") for item in self.items]
        response = self._response("failed", output, self._usage_dict(None), None)
        response["error"] = {"code": code, "message": message}  # code: one of the API's ResponseError codes
        self._emit("response.failed", {"response": response})

    # ---- chunks -> events -------------------------------------------------------------------------------------

    def _chunk(self, chunk: dict[str, Any]) -> None:
        if not self.started:
            if isinstance(chunk.get("model"), str) and chunk["model"]:
                self.model = chunk["model"]
            self._start()
        choices = chunk.get("choices")
        choice = choices[0] if choices and choices.__class__ is list else None  # Responses has one choice
        if choice.__class__ is not dict:
            choice = None
            if chunk.get("error"):  # an OpenAI-format vendor's in-band error event: the stream failed
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else None
                self._fail(f"upstream error mid-stream: {message if isinstance(message, str) else error}",
                           "server_error")
                return
        if chunk.get("usage") is not None or (choice is not None and choice.get("usage") is not None):
            self._usage(chunk)
        if choice is None:
            return
        delta = choice.get("delta")
        if delta and delta.__class__ is dict:
            text = delta.get("content")
            item = self.text
            # The common chunk: more text of the open message (checked first: most of a stream).
            if (text and text.__class__ is str and item is not None and not item.done
                    and not delta.get("reasoning_content") and not delta.get("tool_calls")):
                self._delta_event(item, text)
            else:
                self._delta(delta)
        finish = choice.get("finish_reason")
        if finish and finish.__class__ is str:
            self.finish_reason = finish

    def _usage(self, chunk: dict[str, Any]) -> None:
        usage = usage_from_payload(chunk)  # Moonshot reports it inside choices[0]
        if usage is not None:
            self.usage = usage  # the last report wins, as the gateway meters it
            self.reasoning_tokens = out.reasoning_tokens_of(chunk.get("usage")) or self.reasoning_tokens

    def _delta(self, delta: dict[str, Any]) -> None:
        reasoning = delta.get("reasoning_content")
        if reasoning and isinstance(reasoning, str):
            item = self.reasoning
            if item is None or item.done:
                item = self.reasoning = self._open("reasoning")
            self._delta_event(item, reasoning)
        text = delta.get("content") or delta.get("refusal")  # a refusal streams as text: few vendors send one
        if text and isinstance(text, str):
            item = self.text
            if item is None or item.done:
                item = self.text = self._open("message")
            self._delta_event(item, text)
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._call_delta(call)

    def _delta_event(self, item: _Item, text: str) -> None:
        item.parts.append(text)
        self._buf.append(item.delta_head + orjson.dumps(text) + b',"sequence_number":%d}\n\n' % self.seq)
        self.seq += 1

    def _call_delta(self, call: dict[str, Any]) -> None:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        index = call.get("index")
        if index is None:  # a vendor sending each call whole, without an index: a new id is a new call
            index = len(self.calls) - 1
            if index < 0 or (call.get("id") and self.calls[index].call_id not in ("", call["id"])):
                index += 1
        item = self.calls.get(index)
        if item is None:
            item = self._open("function_call", str(call.get("id") or ""), str(function.get("name") or ""))
            self.calls[index] = item
        elif not item.call_id and call.get("id"):
            item.call_id = str(call["id"])
        arguments = function.get("arguments")
        if arguments and isinstance(arguments, str):
            self._delta_event(item, arguments)

    def _open(self, kind: str, call_id: str = "", name: str = "") -> _Item:
        # A new item ends the text or reasoning item before it: items stream one after another.
        for current in (self.text, self.reasoning):
            if current is not None and not current.done:
                self._close(current, "completed")
        index = len(self.items)
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind]
        item = _Item(kind, index, out.item_id(self.response_id, prefix, index), call_id, name)
        self.items.append(item)
        added = item.snapshot(self.response_id, "in_progress")
        if kind != "function_call":
            added["content"] = []
        self._emit("response.output_item.added", {"output_index": index, "item": added})
        if kind != "function_call":
            part = _part(kind, "")
            self._emit("response.content_part.added",
                       {"item_id": item.id, "output_index": index, "content_index": 0, "part": part})
        return item

    def _close(self, item: _Item, status: str) -> None:
        item.done = True
        text = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "function_call":
            self._emit("response.function_call_arguments.done", {**where, "name": item.name, "arguments": text})
        else:
            kind = "response.output_text.done" if item.kind == "message" else "response.reasoning_text.done"
            done: dict[str, Any] = {**where, "content_index": 0, "text": text}
            if item.kind == "message":
                done["logprobs"] = []
            self._emit(kind, done)
            self._emit("response.content_part.done", {**where, "content_index": 0, "part": _part(item.kind, text)})
        self._emit("response.output_item.done",
                   {"output_index": item.index, "item": item.snapshot(self.response_id, status)})

    def _complete(self, metered: Usage | None) -> None:
        self._start()
        self.done = True
        incomplete = out.incomplete_reason(self.finish_reason)
        status = "incomplete" if incomplete else "completed"
        for item in self.items:
            if not item.done:
                self._close(item, status)
        output = [item.snapshot(self.response_id, status) for item in self.items]
        response = self._response(status, output, self._usage_dict(metered), incomplete)
        self._emit("response.incomplete" if incomplete else "response.completed", {"response": response})

    # ---- framing ------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        if not self.started:
            self.started = True
            created = orjson.dumps(self._response("in_progress", [], None, None))  # one encoding, two events
            for kind in ("response.created", "response.in_progress"):
                self._buf.append(b"event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%d,\"response\":%s}\n\n"
                                 % (kind.encode(), kind.encode(), self.seq, created))
                self.seq += 1

    def _response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None,
                  incomplete: str | None) -> dict[str, Any]:
        return out.response_object(self.response_id, self.created_at, self.model, self.echo, status, output, usage,
                                   incomplete)

    def _usage_dict(self, metered: Usage | None) -> dict[str, Any] | None:
        return out.response_usage(self.usage or metered, self.reasoning_tokens)

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        payload["type"] = kind
        payload["sequence_number"] = self.seq
        self.seq += 1
        self._buf.append(sse_event(kind, payload))

    def _flush(self) -> bytes:
        buf = self._buf
        if len(buf) == 1:  # most batches: one chunk, one delta event
            return buf.pop()
        data = b"".join(buf)
        buf.clear()
        return data


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "message":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "reasoning_text", "text": text}

