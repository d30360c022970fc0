"""The prefix-cache model end to end over plain data: a hasher, a local store and the pure lookup, table-driven."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateway.cache.prefix import PrefixHasher
from gateway.cache.service import PrefixCache
from gateway.cache.store import LocalPrefixStore
from gateway.decisions.prefix_cache import (AUTOMATIC, EXPLICIT, NONE, CacheSettings, effective_mode, is_miss,
                                            next_trust, outcome, probe_indices, stored_indices)
from gateway.domain import Deployment, Price, PriceVersion
from gateway.tokens import TokenCounter

A = ("a", "m")
B = ("b", "m")
COUNTER = TokenCounter()
SYSTEM = "You are a careful assistant. " * 60  # ~360 tokens
TOOLS = [{"type": "function", "function": {"name": f"tool_{i}", "description": "Looks things up. " * 20,
                                            "parameters": {"type": "object", "properties": {}}}} for i in range(4)]


def dep(key: tuple[str, str]) -> Deployment:
    return Deployment(key[0], key[1], key[1], 100_000, None, 80, frozenset({"tools"}))


def prices(cached: str | None = "0.1") -> PriceVersion:
    p = Price("CNY", 1_000_000, Decimal(1), Decimal(2), Decimal(cached) if cached else None)
    from datetime import datetime, timezone
    return PriceVersion(1, datetime(2024, 1, 1, tzinfo=timezone.utc), "CNY", {}, {A: p, B: p})


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def conversation(turns: int, *, system: str = SYSTEM, tools: Any = None, tag: str = "") -> dict[str, Any]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for i in range(turns):
        msgs.append({"role": "user", "content": f"question {tag}{i}: " + "tell me more about it. " * 30})
        if i < turns - 1:
            msgs.append({"role": "assistant", "content": f"answer {i}: " + "here is more. " * 30})
    body: dict[str, Any] = {"model": "auto", "messages": msgs}
    if tools is not None:
        body["tools"] = tools
    return body


def make(settings: dict[tuple[str, str], CacheSettings], clock: Clock) -> tuple[PrefixCache, LocalPrefixStore]:
    store = LocalPrefixStore()
    return PrefixCache(settings, PrefixHasher(COUNTER), store, None, clock), store


async def run(cache: PrefixCache, body: dict[str, Any], pv: PriceVersion, send_to: tuple[str, str] | None
              ) -> dict[tuple[str, str], tuple[int, int]]:
    pool = [dep(A), dep(B)]
    lookup = await cache.lookup(body, pool, pv)
    if send_to is not None:
        cache.sent(dep(send_to), lookup, pv)
    return lookup.warm if lookup is not None else {}


def test_prefix_tokens_match_the_request_estimate() -> None:
    body = conversation(5, tools=TOOLS)
    p = PrefixHasher(COUNTER).prefix(body)
    assert p.tokens[-1] + 3 == COUNTER.count_messages(body["messages"], body["tools"])
    assert p.anchor == 1  # system, then tools


def test_hashes_are_the_same_for_equal_prefixes_and_chain_the_previous_ones() -> None:
    h = PrefixHasher(COUNTER)
    short, long = h.prefix(conversation(2)), PrefixHasher(COUNTER).prefix(conversation(3))
    assert long.hashes[:len(short)] == short.hashes
    other = h.prefix(conversation(3, system="Another system prompt. " * 60))
    assert not set(other.hashes) & set(long.hashes)  # a different system prompt changes every later boundary


@pytest.mark.parametrize("case", [
    # (name, settings for A, age of the first turn at the second in s, expected warm for A on turn 2)
    ("warm within ttl", CacheSettings(AUTOMATIC, 300, 500), 100, True),
    ("expired after ttl", CacheSettings(AUTOMATIC, 300, 500), 300, False),
    ("below min_tokens", CacheSettings(AUTOMATIC, 300, 100_000), 1, False),
    ("mode none never warm", CacheSettings(NONE, 300, 0), 1, False),
    ("default mode from a cached price", CacheSettings(None, 60, 0), 1, True),
], ids=lambda c: c[0] if isinstance(c, tuple) else str(c))
async def test_second_turn_is_warm_only_within_ttl_and_above_min_tokens(case: tuple[Any, ...]) -> None:
    _, settings, age, warm = case
    clock = Clock()
    cache, _ = make({A: settings}, clock)
    pv = prices()
    assert await run(cache, conversation(2), pv, A) == {}  # cold first turn
    clock.t += age
    body = conversation(3)
    got = await run(cache, body, pv, None)
    if warm:
        p = PrefixHasher(COUNTER).prefix(conversation(2))
        assert got == {A: (p.tokens[-1], 0)}  # exactly the previous turn's prompt
    else:
        assert got == {}


async def test_diverging_prefixes_share_only_their_common_part() -> None:
    clock = Clock()
    cache, _ = make({A: CacheSettings(AUTOMATIC, 300, 0)}, clock)
    pv = prices()
    await run(cache, conversation(4, tools=TOOLS), pv, A)
    # Same system and tools, a different first question: only system + tools (the anchor) is warm.
    got = await run(cache, conversation(4, tools=TOOLS, tag="x"), pv, None)
    p = PrefixHasher(COUNTER).prefix(conversation(1, tools=TOOLS))
    assert got == {A: (p.tokens[1], 0)}
    # Different tools: nothing after the system prompt matches (tools are in the prefix).
    got = await run(cache, conversation(4, tools=TOOLS[:2]), pv, None)
    assert got == {A: (p.tokens[0], 0)}  # the system prompt alone (boundary 0 is always remembered)


async def test_the_system_prompt_is_part_of_the_prefix() -> None:
    clock = Clock()
    cache, _ = make({A: CacheSettings(AUTOMATIC, 300, 0)}, clock)
    pv = prices()
    await run(cache, conversation(3), pv, A)
    assert await run(cache, conversation(4, system="Different. " * 50), pv, None) == {}


async def test_only_the_deployment_that_was_sent_the_prefix_is_warm() -> None:
    clock = Clock()
    cache, _ = make({A: CacheSettings(AUTOMATIC, 300, 0), B: CacheSettings(AUTOMATIC, 300, 0)}, clock)
    pv = prices()
    await run(cache, conversation(2), pv, B)
    assert set(await run(cache, conversation(3), pv, None)) == {B}


def marked(body: dict[str, Any], index: int) -> dict[str, Any]:
    m = body["messages"][index]
    m["content"] = [{"type": "text", "text": m["content"], "cache_control": {"type": "ephemeral"}}]
    return body


async def test_explicit_caches_count_only_marked_prefixes_and_predict_writes() -> None:
    clock = Clock()
    cache, _ = make({A: CacheSettings(EXPLICIT, 300, 0), B: CacheSettings(AUTOMATIC, 300, 0)}, clock)
    pv = prices()
    # No mark: an explicit cache neither reads nor writes; the automatic one will hold the prefix.
    assert await run(cache, conversation(2), pv, A) == {}
    assert await run(cache, conversation(2), pv, B) == {}
    assert (await run(cache, conversation(3), pv, None)).keys() == {B}
    # The system prompt marked: the first request writes it ...
    first = marked(conversation(2), 0)
    p = PrefixHasher(COUNTER).prefix(first)
    assert p.marks == (0,)
    got = await run(cache, first, pv, A)
    assert got[A] == (0, p.tokens[0])
    # ... the next one reads it, and writes the rest up to its own last mark.
    second = marked(marked(conversation(3), 0), 3)
    p2 = PrefixHasher(COUNTER).prefix(second)
    got = await run(cache, second, pv, A)
    assert got[A] == (p.tokens[0], p2.tokens[3] - p.tokens[0])
    assert got.get(B, (0, 0))[1] == 0  # automatic caches never predict writes


@pytest.mark.parametrize("cap", [1, 3])
async def test_the_memory_per_deployment_is_bounded_lru(cap: int) -> None:
    clock = Clock()
    cache, store = make({A: CacheSettings(AUTOMATIC, 300, 0, max_entries=cap)}, clock)
    pv = prices()
    for i in range(10):
        await run(cache, conversation(2, system=f"system {i} " * 200), pv, A)
        assert store.entries(A) <= cap
    # The latest conversation is still remembered, the first one was evicted.
    assert await run(cache, conversation(3, system="system 9 " * 200), pv, None) != {}
    assert await run(cache, conversation(3, system="system 0 " * 200), pv, None) == {}


@pytest.mark.parametrize("settings,price,mode", [
    (CacheSettings(None), Price("CNY", 1000, Decimal(1), Decimal(2), Decimal("0.1")), AUTOMATIC),
    (CacheSettings(None), Price("CNY", 1000, Decimal(1), Decimal(2), Decimal(1)), NONE),
    (CacheSettings(None), Price("CNY", 1000, Decimal(1), Decimal(2)), NONE),
    (CacheSettings(None), None, NONE),
    (CacheSettings(EXPLICIT), Price("CNY", 1000, Decimal(1), Decimal(2)), EXPLICIT),
])
def test_default_mode_follows_the_price(settings: CacheSettings, price: Price | None, mode: str) -> None:
    assert effective_mode(settings, price) == mode


@pytest.mark.parametrize("predicted,reported,parts,miss", [
    (1000, 1000, (1000, 0, 0), False),
    (1000, 960, (960, 40, 0), False),  # the vendor's block rounding: a hit
    (1000, 0, (0, 1000, 0), True),
    (0, 500, (0, 0, 500), False),
    (400, 900, (400, 0, 500), False),
])
def test_outcome_partitions_prediction_and_report(predicted: int, reported: int, parts: tuple[int, int, int],
                                                  miss: bool) -> None:
    assert outcome(predicted, reported) == parts
    assert is_miss(predicted, reported) is miss


def test_trust_halves_on_a_miss_and_recovers_on_hits() -> None:
    t = next_trust(1.0, 1000, 0)
    assert t == 0.5
    assert next_trust(t, 1000, 1000) == 1.0
    assert next_trust(1 / 16, 1000, 0) == 1 / 16
    assert next_trust(0.5, 0, 800) == 0.5


def test_probes_cover_the_previous_turn_and_stored_anchors() -> None:
    p = PrefixHasher(COUNTER).prefix(conversation(50, tools=TOOLS))
    n = len(p)
    probes = probe_indices(p)
    assert list(probes) == sorted(probes, reverse=True) and n - 3 in probes and p.anchor in probes
    stored = stored_indices(p, AUTOMATIC)
    assert n - 1 in stored and p.anchor in stored and len(stored) <= 10
    assert stored_indices(p, NONE) == []


async def test_a_miss_shortens_the_trusted_ttl() -> None:
    from gateway.domain import Usage

    clock = Clock()
    cache, _ = make({A: CacheSettings(AUTOMATIC, 300, 0)}, clock)
    pv = prices()
    await run(cache, conversation(2), pv, A)
    clock.t += 200
    pool = [dep(A), dep(B)]
    lookup = await cache.lookup(conversation(3), pool, pv)
    assert lookup is not None and lookup.cached_for(A) > 0
    cache.observe(dep(A), lookup, Usage(5000, 0, 10))  # the vendor had evicted it
    assert cache.trust[A] == 0.5
    cache.sent(dep(A), lookup, pv)
    clock.t += 200  # within ttl_s, beyond the trusted 150 s
    assert (await cache.lookup(conversation(4), pool, pv)).warm == {}  # type: ignore[union-attr]


async def test_a_messages_request_marks_predict_an_explicit_cache_write_then_a_hit() -> None:
    """The Messages dialect's chat body has no cache_control; the marks it kept reach the lookup through the parse."""
    from gateway.dialects.messages import MESSAGES

    clock = Clock()
    cache, _ = make({A: CacheSettings(EXPLICIT, 300, 1024), B: CacheSettings(AUTOMATIC, 300, 1024)}, clock)
    pv = prices()
    system = [{"type": "text", "text": SYSTEM * 4, "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "lookup", "description": "Looks things up.", "input_schema": {"type": "object"}}]

    async def turn(*questions: str) -> tuple[Any, Any]:
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": q} for i, q in enumerate(questions)]
        parsed = MESSAGES.parse_body({"model": "auto", "max_tokens": 10, "system": system, "tools": tools,
                                      "messages": messages}, {}, COUNTER, 10)
        return parsed, await cache.lookup(parsed.body, [dep(A), dep(B)], pv, parsed.segments)

    parsed, first = await turn("hi")
    assert first is not None and parsed.segments is not None
    assert first.prefix.marks == (1,)  # system + tools (an Anthropic request puts the tools first)
    written = first.prefix.tokens[1]
    assert written >= 1024 and first.warm == {A: (0, written)}  # turn 1 writes the marked prefix
    cache.sent(dep(A), first, pv)
    _, second = await turn("hi", "hello", "and now?")
    assert second is not None and second.warm == {A: (written, 0)}  # turn 2 reads it, writes nothing more
    # Without the marks (the same chat body measured on its own), the explicit cache would predict nothing.
    blind = await cache.lookup(parsed.body, [dep(A), dep(B)], pv)
    assert blind is not None and A not in blind.warm
