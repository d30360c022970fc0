"""A chat request's canonical prefix: chained hashes and cumulative token estimates at its message boundaries.

Order (contract section 4): the leading system/developer messages, then the tools, then the other messages. The
segments come measured from the parse (`gateway.segments`: per segment `tokens << SHIFT | digest`, 64-bit
content digests the same on every replica), so building a prefix is two C-level `accumulate`s over them, whatever
the conversation's length, with no second walk over its messages:
  sums_i  = s_0 + ... + s_i          -> cumulative tokens (sums_i >> SHIFT)
  chain_i = sums_0 + ... + sums_i    -> the hash of boundary i: sum over j <= i of (i - j + 1) * s_j
Each segment weighs by its distance from the boundary, so the hash depends on the order of the segments, and
boundary i's hash depends only on segments 0..i (equal prefixes, equal hashes). Left unreduced (exact) here; the
Redis store keys by it mod 2^64 = sum (i - j + 1) * digest_j mod 2^64 (the token bits sit above bit 128 and the
digest sums of fewer than 2^32 segments below it, so neither reaches the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any, Mapping, overload

from gateway.decisions.prefix_cache import Prefix
from gateway.segments import SHIFT, Segments
from gateway.tokens import TokenCounter

_SYSTEM_ROLES = frozenset({"system", "developer"})


class _Tokens(Sequence[int]):
    """The cumulative token counts of a prefix, read off its packed sums only where the model looks."""

    __slots__ = ("_sums",)

    def __init__(self, sums: list[int]) -> None:
        self._sums = sums

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> list[int]: ...

    def __getitem__(self, i: int | slice) -> int | list[int]:
        if isinstance(i, slice):
            return [s >> SHIFT for s in self._sums[i]]
        return self._sums[i] >> SHIFT

    def __len__(self) -> int:
        return len(self._sums)


class PrefixHasher:
    """Builds `Prefix`es from a request's measured segments (measuring them itself when not handed over)."""

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter

    def prefix(self, body: Mapping[str, Any], segments: Segments | None = None) -> Prefix:
        """The prefix of a chat-completions body (messages already validated as a list of objects); `segments`:
        the parse's measure of the same body."""
        messages = body.get("messages") or ()
        if segments is None:
            segments = self._counter.measure(messages, body.get("tools"))
        values = segments.values
        n = len(values)
        k = 0  # the leading system messages
        while k < n and messages[k].get("role") in _SYSTEM_ROLES:
            k += 1
        marks = segments.marks
        if segments.tools:
            values = values[:k]
            values.append(segments.tools)
            values += segments.values[k:]
            anchor = k
            # A mark on a system message covers the tools too: an Anthropic-format request (where explicit caches
            # are) puts the tools before the system prompt.
            marks = tuple(sorted({i + 1 if i >= k else k for i in marks} | ({k} if segments.tools_marked else set())))
        else:
            anchor = k - 1
        sums = list(accumulate(values))
        return Prefix(list(accumulate(sums)), _Tokens(sums), anchor, marks)
