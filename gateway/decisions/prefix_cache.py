"""The prefix-cache model, as pure functions over plain data: which prompt tokens of a request a deployment is
expected to serve from its prompt cache, and what the request would write to an explicit cache.

A request's canonical prefix (system messages, tools, then the other messages, in order) is cut at message
boundaries; boundary i has a chained hash (it covers everything up to and including segment i) and the
cumulative estimated prompt tokens up to it (`Prefix`, built by `gateway.cache.prefix`). The gateway remembers,
per deployment, the boundary hashes of what it sent there and when (`stored_indices`: a few per request, not all);
a later request probes its own boundaries (`probe_indices`) and the longest one remembered within the deployment's
TTL, and at least `min_tokens`, is its expected cache hit (`expected_cache`).

Modes (contract section 3): `automatic` vendors cache every prefix they saw (DeepSeek, OpenAI, Qwen);
`explicit` ones only what the client marked with `cache_control` (Anthropic): hits count only at marked
boundaries, and the prefix up to the last mark that is not already cached is written (priced at cache_write).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Mapping, Sequence

from gateway.domain import DeploymentKey, Price

AUTOMATIC = "automatic"
EXPLICIT = "explicit"
NONE = "none"
CacheMode = Literal["automatic", "explicit", "none"]

# How far back from a request's last boundary it probes for the previous turn's last boundary: a chat turn adds
# two messages (the reply and the next question), an agent step the reply and one tool result per call.
_RECENT = 8


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """A deployment's `cache:` settings; `mode` None = decided by its live price (see `effective_mode`)."""

    mode: CacheMode | None = None
    ttl_s: float = 300.0
    min_tokens: int = 1024
    max_entries: int = 10_000


def effective_mode(settings: CacheSettings, price: Price | None) -> str:
    """The configured mode, else automatic when the price has a cached_input below input, else none."""
    if settings.mode is not None:
        return settings.mode
    if price is None or price.cached_input is None:
        return NONE
    return AUTOMATIC if price.cached_input < price.input else NONE


@dataclass(frozen=True, slots=True)
class Prefix:
    """A request's canonical prefix at its boundaries: chained hashes, cumulative estimated tokens, the index of
    the boundary after system and tools (-1: none), and the boundaries carrying a `cache_control` mark."""

    hashes: Sequence[int]
    tokens: Sequence[int]
    anchor: int = -1
    marks: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.hashes)


def _powers(n: int) -> list[int]:
    """Boundaries 0, 1, 3, 7, 15, ... below n: anchors any two requests sharing a long prefix have in common."""
    out, i = [], 1
    while i <= n:
        out.append(i - 1)
        i <<= 1
    return out


def stored_indices(prefix: Prefix, mode: str) -> list[int]:
    """The boundaries remembered for a request sent to a deployment in `mode` (the vendor caches every prefix of
    what it saw, but a few anchors are enough to recognise the next turn: its last boundary, system and tools, and
    power-of-two positions for conversations that diverge)."""
    n = len(prefix.hashes)
    if mode == EXPLICIT:
        return list(prefix.marks)
    if mode != AUTOMATIC or not n:
        return []
    out = set(_powers(n))
    out.add(n - 1)
    if prefix.anchor >= 0:
        out.add(prefix.anchor)
    return sorted(out)


def probe_indices(prefix: Prefix) -> tuple[int, ...]:
    """The boundaries a request looks up, longest first: its last few (the previous turn ended there), the
    power-of-two anchors, system and tools, and its cache_control marks."""
    return _probes(len(prefix.hashes), prefix.anchor, prefix.marks)


@lru_cache(maxsize=4096)
def _probes(n: int, anchor: int, marks: tuple[int, ...]) -> tuple[int, ...]:
    # Memoised: requests of one shape (length, system and tools, marks) probe the same boundaries.
    out = set(range(max(0, n - _RECENT), n))
    out.update(_powers(n))
    out.update(marks)
    if anchor >= 0:
        out.add(anchor)
    return tuple(sorted(out, reverse=True))


Rule = tuple[str, float, int]  # (mode, trusted TTL in seconds, min_tokens) of one caching deployment


def expected_cache(prefix: Prefix, found: Mapping[int, Mapping[DeploymentKey, float]],
                   rules: Mapping[DeploymentKey, Rule], now: float) -> dict[DeploymentKey, tuple[int, int]]:
    """Expected (cached tokens, cache-write tokens) per deployment, only where either is non-zero.

    `found`: for probed boundary indices, the deployments that were sent that prefix and when (seconds, same clock
    as `now`); `rules`: the pool's caching deployments. The longest remembered prefix within the TTL and at least
    min_tokens is the hit (explicit caches: only at a marked boundary); explicit caches also write the prefix up to
    the request's last mark, less what is already cached, when that prefix reaches min_tokens.
    """
    tokens = prefix.tokens
    marks = prefix.marks
    best: dict[DeploymentKey, int] = {}
    for i in sorted(found, reverse=True):
        t = -1  # read when first needed
        for key, sent_at in found[i].items():
            if key in best:
                continue
            rule = rules.get(key)
            if rule is None:
                continue
            mode, ttl, min_tokens = rule
            if now - sent_at >= ttl or (mode == EXPLICIT and i not in marks):
                continue
            if t < 0:
                t = tokens[i]
            if t >= min_tokens:
                best[key] = t
    out = {key: (t, 0) for key, t in best.items() if t}
    if marks:
        last = tokens[marks[-1]]
        for key, (mode, _, min_tokens) in rules.items():
            if mode == EXPLICIT and last >= min_tokens:
                cached = best.get(key, 0)
                if last > cached:
                    out[key] = (cached, last - cached)
    return out


def outcome(predicted: int, reported: int) -> tuple[int, int, int]:
    """A prediction against what the vendor reported, in tokens: (hit, miss, unpredicted). hit + miss is the
    prediction, hit + unpredicted what the vendor served from its cache."""
    hit = min(predicted, reported)
    return hit, predicted - hit, reported - hit


MIN_TRUST = 1 / 16


def is_miss(predicted: int, reported: int) -> bool:
    """A hit was expected and the vendor served less than half of it from cache (evicted early, or never cached
    what the gateway thought): block rounding at the vendor is not a miss."""
    return predicted > 0 and reported * 2 < predicted


def next_trust(trust: float, predicted: int, reported: int) -> float:
    """How much of a deployment's ttl_s the gateway trusts (1 = all): halved by a miss (down to 1/16), doubled back
    by a confirmed hit; unchanged when nothing was predicted."""
    if predicted <= 0:
        return trust
    if is_miss(predicted, reported):
        return max(trust / 2, MIN_TRUST)
    return min(trust * 2, 1.0)
