"""A chat request's canonical prefix: chained hashes and cumulative token estimates at its message boundaries.

Order (contract section 4): the leading system/developer messages, then the tools, then the other messages.
Each segment gets a 64-bit digest (blake2b of its canonical bytes, so every replica computes the same), and the
hash of boundary i chains the hash of boundary i-1: h_i = h_{i-1} + d_i * (M^i mod 2^64) (a positional sum, so a
request's hashes are cumulative sums that C-level maps compute). Chat clients resend the
whole history every turn, so a segment's digest and token count are remembered by its text (a bounded memo):
a 100-message request then costs one dict lookup per message (keyed by role and text, whose hashes the token
counter already computed) and a multiply, instead of serialising and hashing the conversation again.
Token counts follow `TokenCounter.count_messages` exactly (4 per message + content; tools as their JSON), so the
last boundary's cumulative count plus the reply primer is the request's prompt estimate.
"""

from __future__ import annotations

from hashlib import blake2b
from itertools import accumulate
from operator import itemgetter, mul
from typing import Any, Mapping

import orjson

from gateway.decisions.prefix_cache import Prefix
from gateway.tokens import TokenCounter

_MASK = (1 << 64) - 1
_MUL = 0x9E3779B97F4A7C15  # odd: the chain is a bijection of the previous hash for a given digest
_PER_MESSAGE = 4  # as TokenCounter.count_messages
_REPLY_PRIMER = 3
_SYSTEM_ROLES = frozenset({"system", "developer"})
_TOOLS_TAG = b"\x00tools\x00"
_first, _second = itemgetter(0), itemgetter(1)


_ROLE_OF, _CONTENT_OF = itemgetter("role"), itemgetter("content")


def _digest(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def _marked(obj: Any) -> bool:
    """Does a message (or a tool) carry an Anthropic-style `cache_control` mark, on itself or a content part?"""
    if not isinstance(obj, dict):
        return False
    if "cache_control" in obj:
        return True
    content = obj.get("content")
    return isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content)


class PrefixHasher:
    """Builds `Prefix`es; holds the memo of segment digests (bounded, oldest first out)."""

    def __init__(self, counter: TokenCounter, max_entries: int = 8192) -> None:
        self._counter = counter
        self._max = max_entries
        self._text: dict[tuple[Any, str], tuple[int, int]] = {}  # (role, text) -> (digest, tokens)
        self._blob: dict[bytes, tuple[int, int, bool]] = {}  # canonical JSON -> (digest, tokens, marked)
        self._items: dict[tuple[Any, ...], tuple[int, int, bool]] = {}  # a message's items -> as _blob
        self._pow: list[int] = [1]

    def _remember(self, memo: dict[Any, Any], key: Any, value: Any) -> None:
        if len(memo) >= self._max:
            del memo[next(iter(memo))]
        memo[key] = value

    def _simple(self, role: Any, content: str) -> tuple[int, int]:
        """A plain text message: (digest of its role and text, its tokens + the per-message framing)."""
        key: tuple[Any, str] | None = (role, content)
        try:
            e = self._text.get(key)  # type: ignore[arg-type]
        except TypeError:  # a role that is not hashable (the vendor will refuse it): by its text
            key, e = None, None
        if e is None:
            data = f"{role}\x00{content}".encode("utf-8", "surrogatepass")
            e = (_digest(data), self._counter.count_text(content) + _PER_MESSAGE)
            if key is not None and content:  # "" beside tool_calls is not plain: never looked up by the fast path
                self._remember(self._text, key, e)
        return e

    def _other(self, m: Any) -> tuple[int, int, bool]:
        """A message that is not just {role, content: str}: its canonical JSON is the key."""
        blob = orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
        e = self._blob.get(blob)
        if e is None:
            tokens = self._counter.count_messages([m]) - _REPLY_PRIMER
            e = (_digest(blob), tokens, _marked(m))
            self._remember(self._blob, blob, e)
        return e

    def _tools(self, tools: Any) -> tuple[int, int, bool]:
        blob = orjson.dumps(tools)
        e = self._blob.get(blob)
        if e is None:
            tokens = self._counter.count_text(blob.decode())
            marked = isinstance(tools, list) and any(_marked(t) for t in tools)
            e = (_digest(_TOOLS_TAG + blob), tokens, marked)
            self._remember(self._blob, blob, e)
        return e

    def prefix(self, body: Mapping[str, Any]) -> Prefix:
        """The prefix of a chat-completions body (messages already validated as a list of objects).

        Vectorised: the per-message work is done by C-level maps over lists (a Python loop body per message would
        cost ~4x more); only messages that are not plain {role, content: str} take a Python step each.
        """
        messages = body.get("messages") or ()
        tools = body.get("tools")
        n = len(messages)
        try:  # C-level maps; a message without a role or content, or with a list of parts, takes the slow step
            entries: list[Any] = list(map(self._text.get, zip(map(_ROLE_OF, messages), map(_CONTENT_OF, messages))))
        except (KeyError, TypeError):
            entries = [None] * n
        lengths = list(map(len, messages))
        if lengths.count(2) != n:  # more than {role, content}: name, tool_call_id, tool_calls ...
            for i, size in enumerate(lengths):
                if size != 2:
                    entries[i] = None
        marks: list[int] = []
        if not all(entries):  # (truth tests: `None in` would compare every tuple with None)
            self._fill(messages, entries, marks)
        digests = list(map(_first, entries)) if tools else map(_first, entries)
        counts = list(map(_second, entries)) if tools else map(_second, entries)
        k = 0  # the leading system messages
        while k < n and messages[k].get("role") in _SYSTEM_ROLES:
            k += 1
        anchor = k - 1
        if tools:
            d, t, marked = self._tools(tools)
            digests.insert(k, d)  # type: ignore[union-attr]
            counts.insert(k, t)  # type: ignore[union-attr]
            anchor = k
            marks = [i + 1 if i >= k else i for i in marks]
            if marked:
                marks.append(k)
                marks.sort()
        # The hashes are left unreduced (exact, so equal prefixes have equal ones); stores reduce them mod 2^64.
        hashes = tuple(accumulate(map(mul, digests, self._powers(n + (1 if tools else 0)))))
        return Prefix(hashes, tuple(accumulate(counts)), anchor, tuple(marks))

    def _fill(self, messages: Any, entries: list[Any], marks: list[int]) -> None:
        """The entries the memo did not have; the indices of messages carrying cache_control marks."""
        for i, e in enumerate(entries):
            if e is None:
                m = messages[i]
                content = m.get("content")
                if content.__class__ is str and len(m) == 2:
                    entries[i] = self._simple(m.get("role"), content)
                    continue
                try:  # a message of text fields only (a tool result: role, tool_call_id, content) by its items
                    key: Any = tuple(m.items())
                    e = self._items.get(key)
                except TypeError:  # a list of parts, tool calls: by its canonical JSON
                    key, e = None, None
                if e is None:
                    e = self._other(m)
                    if key is not None:
                        self._remember(self._items, key, e)
                entries[i] = e
                if e[2]:
                    marks.append(i)

    def _powers(self, n: int) -> list[int]:
        """M^0 .. M^(n-1) mod 2^64: the weight of each boundary's digest in the hashes (h_i = h_{i-1} + d_i M^i)."""
        p = self._pow
        while len(p) < n:
            p.append((p[-1] * _MUL) & _MASK)
        return p if len(p) == n else p[:n]
