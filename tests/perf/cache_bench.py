"""CPU of cache-aware routing (issue 14): the prefix-cache lookup of a 100-message conversation, and routing over
100 deployments with and without warm ones. Process CPU time, best of five rounds (the machine is shared).

    .venv/bin/python -m tests.perf.cache_bench
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from decimal import Decimal
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
    """The request path's prefix-cache work for one request: hashing its boundaries (the memo warm, as from turn
    two on), probing the local store and the pure lookup; and the same with the turn's prefix remembered."""
    from gateway.cache.prefix import PrefixHasher
    from gateway.cache.service import PrefixCache
    from gateway.cache.store import LocalPrefixStore
    from gateway.decisions.prefix_cache import CacheSettings
    from gateway.domain import Deployment, Price, PriceVersion
    from gateway.tokens import TokenCounter

    counter = TokenCounter()
    pool = [Deployment(f"p{i}", "m", "m", 128_000, None, 80, frozenset()) for i in range(8)]
    prices = {d.key: Price("CNY", 1_000_000, Decimal(1), Decimal(2), Decimal("0.1")) for d in pool}
    pv = PriceVersion(1, datetime.now(timezone.utc), "CNY", {}, prices)
    cache = PrefixCache({d.key: CacheSettings(ttl_s=1e9, min_tokens=0) for d in pool}, PrefixHasher(counter),
                        LocalPrefixStore())
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are an agent. " * 200}]
    for i in range(messages - 1):
        role = "user" if i % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"turn {i}: " + "some words of the conversation " * 12})
    body = {"model": "auto", "messages": msgs}
    counter.count_messages(msgs)  # the parse has counted every content string (and hashed it) already
    cold_cache = PrefixCache(cache.settings, PrefixHasher(counter), LocalPrefixStore())
    lookup = _run(cache.lookup({"model": "auto", "messages": msgs[:-2]}, pool, pv))
    cache.sent(pool[3], lookup, pv)
    warm_lookup = _run(cache.lookup(body, pool, pv))
    assert warm_lookup is not None and warm_lookup.warm, "the previous turn should be warm"
    # For scale: what the request path already spends on the same messages (the parse's token estimate).
    cold, warm, hashing, counting = _best(lambda: _run(cold_cache.lookup(body, pool, pv)),
                                          lambda: _run(cache.lookup(body, pool, pv)),
                                          lambda: cache.hasher.prefix(body),
                                          lambda: counter.count_messages(msgs))
    return {"messages": messages, "lookup_cold_us": cold, "lookup_warm_us": warm, "hashing_us": hashing,
            "parse_token_count_us": counting}


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
