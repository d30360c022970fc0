"""CPU of cache-aware routing (issue 14): what the prefix-cache lookup adds to the request path for a 100-message
conversation (parse + lookup against the parse alone, measured in the same alternating rounds), and routing over
100 deployments with and without warm ones. Process CPU time, best of nine alternating rounds (the machine is
shared, so figures are against a baseline of the same run).

    .venv/bin/python -m tests.perf.cache_bench
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from decimal import Decimal
from operator import itemgetter
from typing import Any, Callable


def _best(*fns: Callable[[], Any], budget_s: float = 2.0, rounds: int = 9) -> list[float]:
    """CPU us per call of each function: rounds alternate between them (the machine's speed drifts over seconds,
    so A and B see the same conditions), best round of each."""
    per_round = []
    for fn in fns:
        fn()
        t0 = time.process_time()
        fn()
        per_round.append(max(1, int(budget_s / rounds / len(fns) / max(time.process_time() - t0, 1e-7))))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            for _ in range(per_round[i]):
                fn()
            best[i] = min(best[i], (time.process_time() - t0) / per_round[i])
    return [b * 1e6 for b in best]


def _run(coro: Any) -> Any:
    """Drive a coroutine that never suspends (the local store's) as the request path's `await` does, without an
    event loop's own overhead in the figure."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the local prefix store never suspends")


def lookup_bench(messages: int = 100) -> dict[str, float]:
    """What the prefix cache adds to the request path for one request of a `messages`-message conversation (the
    memos warm, as from turn two on): the parse alone (`chat_request`, which measures the messages for the token
    estimate and the cache in one walk) against the parse followed by the lookup it hands its measure to, with no
    deployment warm and with the previous turn's prefix remembered at one. For scale: the per-message counting loop
    the parse ran before (`count_messages`), and the lookup measuring the messages itself. A figure is the
    difference of two best-of-rounds figures of the same run, so it carries the noise of both."""
    from gateway.cache.prefix import PrefixHasher
    from gateway.cache.service import PrefixCache
    from gateway.cache.store import LocalPrefixStore
    from gateway.decisions.prefix_cache import CacheSettings
    from gateway.domain import Deployment, Price, PriceVersion
    from gateway.http.parse import chat_request
    from gateway.tokens import TokenCounter

    counter = TokenCounter()
    pool = [Deployment(f"p{i}", "m", "m", 128_000, None, 80, frozenset()) for i in range(8)]
    prices = {d.key: Price("CNY", 1_000_000, Decimal(1), Decimal(2), Decimal("0.1")) for d in pool}
    pv = PriceVersion(1, datetime.now(timezone.utc), "CNY", {}, prices)
    settings = {d.key: CacheSettings(ttl_s=1e9, min_tokens=0) for d in pool}
    cache = PrefixCache(settings, PrefixHasher(counter), LocalPrefixStore())
    cold_cache = PrefixCache(settings, PrefixHasher(counter), LocalPrefixStore())
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are an agent. " * 200}]
    for i in range(messages - 1):
        role = "user" if i % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"turn {i}: " + "some words of the conversation " * 12})
    headers: dict[str, str] = {}

    def parse(m: list[dict[str, Any]]) -> Any:
        return chat_request({"model": "auto", "messages": m}, headers, counter, 256, checked=True)

    previous = parse(msgs[:-2])
    cache.sent(pool[3], _run(cache.lookup(previous.body, pool, pv, previous.segments)), pv)
    parsed = parse(msgs)
    body, segments = parsed.body, parsed.segments
    warm_lookup = _run(cache.lookup(body, pool, pv, segments))
    assert warm_lookup is not None and warm_lookup.warm, "the previous turn should be warm"
    assert parsed.facts.prompt_tokens == counter.count_messages(msgs)

    def parse_and_lookup(c: PrefixCache) -> Callable[[], Any]:
        def run() -> Any:
            p = chat_request(body, headers, counter, 256, checked=True)
            return _run(c.lookup(p.body, pool, pv, p.segments))
        return run

    # What the parse's walk would cost if it kept only the counts (no digests, no role in the key): the share of
    # the walk that is the cache's, added to the lookup's in `added_with_walk_share_us`.
    counts = {m["content"]: counter.count_text(m["content"]) + 4 for m in msgs}
    content = itemgetter("content")

    def count_only() -> int:
        n = len(msgs)
        found = list(map(counts.get, map(content, msgs)))
        assert list(map(len, msgs)).count(2) == n and all(found)
        return sum(found) + 3

    assert count_only() == parsed.facts.prompt_tokens
    alone, cold, warm, measuring, counting_only, counting, unhanded = _best(
        lambda: chat_request(body, headers, counter, 256, checked=True), parse_and_lookup(cold_cache),
        parse_and_lookup(cache), lambda: counter.measure(msgs), count_only, lambda: counter.count_messages(msgs),
        lambda: _run(cache.lookup(body, pool, pv)))
    walk_share = max(0.0, measuring - counting_only)
    return {"messages": messages, "parse_us": alone, "parse_and_lookup_cold_us": cold,
            "parse_and_lookup_warm_us": warm, "added_cold_us": cold - alone, "added_warm_us": warm - alone,
            "added_warm_vs_parse": (warm - alone) / alone,
            "added_with_walk_share_us": warm - alone + walk_share,
            "walk": {"measure_us": measuring, "count_only_walk_us": counting_only},
            "for_scale": {"count_messages_loop_us": counting, "lookup_measuring_itself_us": unhanded}}


def routing_bench(n: int = 100, warm_count: int = 3) -> dict[str, float]:
    """tests/perf/micro.py's routing setup at n deployments: list prices, then with `warm_count` warm ones."""
    from gateway.decisions.routing import rank
    from gateway.domain import Constraints, Deployment, Price, PriceVersion, RequestFacts

    now = datetime.now(timezone.utc)
    facts = RequestFacts(model="auto", mode="chat", prompt_tokens=300, requested_output_tokens=256,
                         expected_output_tokens=256, capabilities=frozenset(),
                         constraints=Constraints(min_quality=70, min_context=None, providers=None, max_cost=None))
    pool = [Deployment(provider=f"p{i % 37}", model=f"m{i}", upstream_model=f"m{i}",
                       context_window=(8_000, 32_000, 128_000)[i % 3], max_output_tokens=4096,
                       quality=50 + (i * 7) % 50, capabilities=frozenset({"tools"} if i % 2 else ()))
            for i in range(n)]
    prices = {d.key: Price(currency="USD" if i % 4 == 0 else "CNY", per=1000,
                           input=Decimal(1 + i % 13) / 10_000, output=Decimal(2 + i % 11) / 10_000,
                           cached_input=Decimal(1 + i % 13) / 100_000)
              for i, d in enumerate(pool)}
    pv = PriceVersion(version=1, effective_from=now, reporting_currency="CNY", fx_rates={"USD": Decimal("7.10")},
                      prices=prices)
    eligible = [d for d in pool if d.quality >= 70]
    warm = {d.key: (200, 0) for d in eligible[:warm_count]}
    cold_us, warm_us = _best(lambda: rank(facts, pool, pv, now), lambda: rank(facts, pool, pv, now, warm=warm))
    return {"deployments": n, "warm": len(warm), "rank_cold_us": cold_us, "rank_warm_us": warm_us}


def main() -> None:
    print(json.dumps({"lookup": lookup_bench(), "routing": routing_bench()}, indent=1))


if __name__ == "__main__":
    main()
