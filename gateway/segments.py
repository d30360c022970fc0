"""A chat request's messages measured once, in the parse's own walk: its prompt-token estimate and, per segment
(each message, and the tool definitions), what the prefix cache hashes. The parse hands the result over
(`ParsedRequest.segments`), so the prefix-cache lookup (gateway/cache/prefix.py) never walks or looks up the
conversation a second time.

A segment is one int, `tokens << SHIFT | digest`: its estimated tokens (as `TokenCounter.count_messages` counts
them) above a 64-bit content digest (blake2b of its canonical bytes: the same on every replica, never Python's
randomised hash()). Packed that way, sums over segments are C-level sums of ints: `sum >> SHIFT` is their tokens,
and two `accumulate`s give a prefix's cumulative tokens and chained hashes (prefix.py). SHIFT leaves room for the
digest sums of 2^32 segments below the token bits.

Chat clients resend the whole conversation every turn, so a segment's value is remembered (a bounded memo, oldest
first out, by entries and by characters): a plain {role, content: str} message costs one C-level lookup keyed by
(role, content), whose string hashes the lookup computes once per request. Other messages (tool results, tool
calls, content parts) are keyed by their items, or by their canonical JSON when an item is not hashable, and
counted by `count_messages` itself, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import orjson

if TYPE_CHECKING:
    from gateway.tokens import TokenCounter

SHIFT = 128
_PER_MESSAGE = 4  # as TokenCounter.count_messages
_REPLY_PRIMER = 3
_TOOLS_TAG = b"\x00tools\x00"
_MAX_TEXT = 64_000  # longer segments are measured every time (rare, and they would crowd the memo out)
_ROLE_AND_CONTENT = itemgetter("role", "content")


def digest(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def marked(obj: Any) -> bool:
    """Does a message (or a tool) carry an Anthropic-style `cache_control` mark, on itself or a content part?"""
    if not isinstance(obj, dict):
        return False
    if "cache_control" in obj:
        return True
    content = obj.get("content")
    return isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content)


class CacheMarks(NamedTuple):
    """`cache_control` marks a translating dialect saw in the client's own body, which its canonical chat body
    cannot carry (a Messages request's blocks): indices of the chat messages they fall in, and the tools."""

    messages: tuple[int, ...] = ()
    tools: bool = False


@dataclass(slots=True)
class Segments:
    values: list[int]  # per message, packed (tokens << SHIFT | digest)
    tools: int  # the tool definitions, packed (0: no tools)
    marks: tuple[int, ...]  # indices of the messages carrying a cache_control mark, ascending
    tools_marked: bool
    total: int  # the prompt estimate: exactly `TokenCounter.count_messages(messages, tools)`


class _Memo:
    """A bounded memo, oldest first out: at most `entries` keys and `chars` characters of remembered segments."""

    __slots__ = ("values", "_sizes", "_entries", "_chars", "_held")

    def __init__(self, entries: int, chars: int) -> None:
        self.values: dict[Any, Any] = {}
        self._sizes: dict[Any, int] = {}  # same keys, same order
        self._entries, self._chars, self._held = entries, chars, 0

    def remember(self, key: Any, value: Any, size: int) -> None:
        if size > _MAX_TEXT or key in self.values:
            return
        values, sizes = self.values, self._sizes
        values[key] = value
        sizes[key] = size
        self._held += size
        while len(sizes) > self._entries or self._held > self._chars:
            old = next(iter(sizes))
            self._held -= sizes.pop(old)
            del values[old]


class SegmentMeter:
    """Measures a request's messages into `Segments`; holds the memo of segment values."""

    def __init__(self, counter: TokenCounter, max_entries: int = 8192, max_chars: int = 4_000_000) -> None:
        self._counter = counter
        self._plain = _Memo(max_entries, max_chars)  # (role, text) -> packed value
        self._other = _Memo(max_entries, max_chars)  # a message's items / canonical JSON, tools JSON -> (value, marked)

    def measure(self, messages: Sequence[Any], tools: Any = None, marks: CacheMarks | None = None) -> Segments:
        """Vectorised: plain messages found in the memo cost C-level maps over the list (a Python loop body per
        message costs about twice as much); only the others take a Python step each."""
        n = len(messages)
        plain = self._plain.values
        try:  # a message without a role or content, or with a list of parts, makes the whole pass fall back
            values: list[Any] = list(map(plain.get, map(_ROLE_AND_CONTENT, messages)))
            if list(map(len, messages)).count(2) != n:  # more than {role, content}: name, tool_call_id ...
                values = [v if len(m) == 2 else None for v, m in zip(values, messages)]
        except (KeyError, TypeError):
            values = [None] * n
        found: list[int] = list(marks.messages) if marks is not None else []
        if not all(values):  # (packed values are never 0: every message has its framing tokens)
            self._fill(messages, values, found)
        tools_value, tools_marked = self._tools(tools) if tools else (0, False)
        return Segments(values, tools_value, tuple(sorted(set(found))) if found else (),
                        tools_marked or (marks is not None and marks.tools),
                        ((sum(values) + tools_value) >> SHIFT) + _REPLY_PRIMER)

    def _fill(self, messages: Sequence[Any], values: list[Any], found: list[int]) -> None:
        """The values the fast pass did not find; the indices of messages carrying cache_control marks."""
        for i, v in enumerate(values):
            if v is not None:
                continue
            m = messages[i]
            if m.__class__ is not dict:  # count_messages counts nothing for it; the digest still tells it apart
                values[i] = digest(orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
                continue
            content = m.get("content")
            if content.__class__ is str and len(m) == 2:
                values[i] = self._simple(m.get("role"), content)
                continue
            values[i], is_marked = self._message(m)
            if is_marked:
                found.append(i)

    def _simple(self, role: Any, content: str) -> int:
        """A plain text message: its tokens + the per-message framing, over the digest of its role and text."""
        key: tuple[Any, str] | None = (role, content)
        try:
            v = self._plain.values.get(key)
        except TypeError:  # a role that is not hashable (the vendor will refuse it): measured every time
            key, v = None, None
        if v is None:
            data = f"{role}\x00{content}".encode("utf-8", "surrogatepass")
            v = (self._counter.count_text(content) + _PER_MESSAGE) << SHIFT | digest(data)
            if key is not None and content:  # "" beside tool_calls is not plain: never looked up by the fast path
                self._plain.remember(key, v, len(content))
        return v

    def _message(self, m: dict[str, Any]) -> tuple[int, bool]:
        """A message that is not just {role, content: str}: by its items (a tool result: role, tool_call_id,
        content), else by its canonical JSON (content parts, tool calls)."""
        memo = self._other.values
        blob: bytes | None = None
        try:
            key: Any = tuple(m.items())
            e = memo.get(key)
        except TypeError:
            key = blob = orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
            e = memo.get(key)
        if e is None:
            if blob is None:
                blob = orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
            tokens = self._counter.count_messages((m,)) - _REPLY_PRIMER
            e = (tokens << SHIFT | digest(blob), marked(m))
            self._other.remember(key, e, len(blob))
        return e  # type: ignore[no-any-return]

    def _tools(self, tools: Any) -> tuple[int, bool]:
        blob = orjson.dumps(tools)
        memo = self._other.values
        e = memo.get(blob)
        if e is None:
            tokens = self._counter.count_text(blob.decode())
            e = (tokens << SHIFT | digest(_TOOLS_TAG + blob), isinstance(tools, list) and any(map(marked, tools)))
            self._other.remember(blob, e, len(blob))
        return e  # type: ignore[no-any-return]
