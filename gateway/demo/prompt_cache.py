"""A simulated vendor's prompt cache: which leading tokens of a prompt it serves from cache, with TTL and minimum.

Two ways real vendors cache, both here over the same store of prefix keys (chained hashes of the prompt's
tokens, per upstream model):

- automatic (`lookup_and_store`): every prompt is remembered in whole blocks of `block_tokens`; a later prompt
  that starts with the same blocks gets them as cached tokens, when they come to at least `min_tokens`.
  DeepSeek's disk cache stored 64-token units and cached nothing shorter than 64 tokens
  (api-docs.deepseek.com/guides/kv_cache, 2024 edition; today's edition persists units at request boundaries
  instead); OpenAI caches prompts of 1,024 tokens or more and reports hits in 128-token increments, evicting
  after 5-10 minutes unused (developers.openai.com/api/docs/guides/prompt-caching); DashScope's implicit cache
  skips content under 256 tokens and cleans up entries left unused (help.aliyun.com/zh/model-studio/user-guide/
  context-cache).
- explicit (`explicit`): Anthropic-style `cache_control` breakpoints. The prefix up to a breakpoint is written
  on first sight (`cache_creation_input_tokens`) and read afterwards (`cache_read_input_tokens`); prefixes
  below the minimum (1,024 tokens for Sonnet/Opus) are not cached; the 5-minute TTL restarts on every hit.

Entries expire `ttl_s` after their last use. The clock can be advanced (`advance`) so tests and the demo can
show expiry without waiting; `clear` forgets everything (the demo's `/_reset` and `/_cache` endpoints).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence


@dataclass(frozen=True)
class CachePolicy:
    block_tokens: int = 64  # automatic hits are whole multiples of this; 1 = token-granular
    min_tokens: int = 64  # a hit (or an explicit prefix) shorter than this is not cached
    ttl_s: float = 3600.0  # an entry unused this long is gone; each hit restarts it

    def __post_init__(self) -> None:
        if self.block_tokens < 1 or self.min_tokens < 0 or self.ttl_s <= 0:
            raise ValueError(f"bad cache policy {self}")


class PrefixCache:
    """Remembered prompt prefixes of one vendor, each with the time it was last used (LRU-bounded)."""

    def __init__(self, policy: CachePolicy, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 100_000) -> None:
        self.policy = policy
        self._clock = clock
        self._skew = 0.0
        self._max = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # key -> last use
        self._lock = threading.Lock()  # `clear`/`advance` may come from a test thread

    # --- the two vendor behaviours ----------------------------------------------------------------------

    def lookup_and_store(self, pieces: Sequence[str], namespace: str = "") -> int:
        """Automatic caching: the cached tokens of this prompt (whole blocks, >= min or 0); remembers its blocks."""
        block = self.policy.block_tokens
        positions = list(range(block, len(pieces) + 1, block))
        keys = _prefix_keys(pieces, namespace, positions)
        with self._lock:
            now = self._now()
            cached = 0
            for pos, key in zip(positions, keys):
                if not self._alive(key, now):
                    break
                cached = pos
            if cached < self.policy.min_tokens:
                cached = 0
            if len(pieces) >= self.policy.min_tokens:  # a vendor does not cache prompts below its minimum
                self._touch(keys, now)
        return cached

    def explicit(self, pieces: Sequence[str], breakpoints: Iterable[int], namespace: str = "") -> tuple[int, int]:
        """Anthropic-style caching at `breakpoints` (token offsets): (tokens read from cache, tokens written)."""
        points = sorted({p for p in breakpoints if self.policy.min_tokens <= p <= len(pieces) and p > 0})
        if not points:
            return 0, 0
        keys = _prefix_keys(pieces, namespace, points)
        with self._lock:
            now = self._now()
            read = 0
            hit = -1
            for i, (pos, key) in enumerate(zip(points, keys)):
                if self._alive(key, now):
                    read, hit = pos, i
            self._touch(keys, now)  # hits refresh; the breakpoints past the hit are written now
        written = points[-1] - read if hit < len(points) - 1 else 0
        return read, written

    # --- control ----------------------------------------------------------------------------------------

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def advance(self, seconds: float) -> None:
        """Move this cache's clock forward (expiry without waiting)."""
        with self._lock:
            self._skew += seconds

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            now = self._now()
            live = sum(1 for t in self._seen.values() if now - t <= self.policy.ttl_s)
        p = self.policy
        return {"entries": live, "block_tokens": p.block_tokens, "min_tokens": p.min_tokens, "ttl_s": p.ttl_s}

    # --- internals (called with the lock held) ----------------------------------------------------------

    def _now(self) -> float:
        return self._clock() + self._skew

    def _alive(self, key: bytes, now: float) -> bool:
        last = self._seen.get(key)
        return last is not None and now - last <= self.policy.ttl_s

    def _touch(self, keys: Iterable[bytes], now: float) -> None:
        for key in keys:
            self._seen[key] = now
            self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)  # least recently used first: a legitimate eviction


def _prefix_keys(pieces: Sequence[str], namespace: str, positions: Sequence[int]) -> list[bytes]:
    """The key of each prefix `pieces[:pos]` (positions ascending): a chained hash, so one pass serves all."""
    hasher = hashlib.sha256(namespace.encode("utf-8") + b"\x01")
    keys: list[bytes] = []
    done = 0
    for pos in positions:
        for piece in pieces[done:pos]:
            hasher.update(piece.encode("utf-8") + b"\x00")
        done = pos
        keys.append(hasher.copy().digest())
    return keys
