"""A chat request's canonical prefix: chained hashes and cumulative token estimates at its message boundaries.

Order (contract section 4): the leading system/developer messages, then the tools, then the other messages.
Each segment gets a 64-bit digest (blake2b of its canonical bytes, so every replica computes the same), and the
hash of boundary i chains the hash of boundary i-1: h_i = (h_{i-1} * M xor d_i) mod 2^64. Chat clients resend the
whole history every turn, so a segment's digest and token count are remembered by its text (a bounded memo):
a 100-message request then costs one dict lookup per message (the content string's hash is already computed by
the token counter) and a multiply, instead of serialising and hashing the conversation again.
Token counts follow `TokenCounter.count_messages` exactly (4 per message + content; tools as their JSON), so the
last boundary's cumulative count plus the reply primer is the request's prompt estimate.
"""

from __future__ import annotations

from hashlib import blake2b
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
        self._text: dict[str, tuple[int, int]] = {}  # content text -> (digest, tokens of the text)
        self._blob: dict[bytes, tuple[int, int, bool]] = {}  # canonical JSON -> (digest, tokens, marked)
        self._roles: dict[Any, int] = {}

    def _role(self, role: Any) -> int:
        d = self._roles.get(role)
        if d is None:
            d = _digest(b"\x00role\x00" + str(role).encode())
            if len(self._roles) < 64:  # roles are a handful; a client inventing new ones is not remembered
                self._roles[role] = d
        return d

    def _remember(self, memo: dict[Any, Any], key: Any, value: Any) -> None:
        if len(memo) >= self._max:
            del memo[next(iter(memo))]
        memo[key] = value

    def _simple(self, content: str) -> tuple[int, int]:
        e = self._text.get(content)
        if e is None:
            e = (_digest(content.encode("utf-8", "surrogatepass")), self._counter.count_text(content))
            self._remember(self._text, content, e)
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
        """The prefix of a chat-completions body (messages already validated as a list of objects)."""
        messages = body.get("messages") or ()
        tools = body.get("tools")
        hashes: list[int] = []
        tokens: list[int] = []
        marks: list[int] = []
        h = t = 0
        anchor = -1
        in_system = True
        for m in messages:
            role = m.get("role")
            if in_system and role not in _SYSTEM_ROLES:
                in_system = False
                if tools:
                    d, n, marked = self._tools(tools)
                    h = ((h * _MUL) & _MASK) ^ d
                    t += n
                    if marked:
                        marks.append(len(hashes))
                    hashes.append(h)
                    tokens.append(t)
                anchor = len(hashes) - 1
            content = m.get("content")
            if content.__class__ is str and len(m) == 2:
                d, n = self._simple(content)
                d ^= self._role(role)
                n += _PER_MESSAGE
            else:
                d, n, marked = self._other(m)
                if marked:
                    marks.append(len(hashes))
            h = ((h * _MUL) & _MASK) ^ d
            t += n
            hashes.append(h)
            tokens.append(t)
        if in_system and tools:  # only system messages (or none): tools close the prefix
            d, n, marked = self._tools(tools)
            h = ((h * _MUL) & _MASK) ^ d
            if marked:
                marks.append(len(hashes))
            hashes.append(h)
            tokens.append(t + n)
        return Prefix(tuple(hashes), tuple(tokens), anchor, tuple(marks))
