"""`python -m tests.perf.admission_ab [--rounds N] [--requests N]`: CPU per request of the replica path's Redis
work, in process, interleaved rounds (Redis db 11, keys under a random prefix, deleted at the end).

  separate: what the request path did before issue 16's admission: rate-limit check, budget reserve, budget
            settle and tpm adjust, four awaited scripts (the degrade wrappers around each, as served);
  combined: `Admission.admit` (one script) and the settlement handed to the settler (one pipeline per batch,
            sent by the outbox while the next request runs), as served now;
and the in-process (no Redis) counterparts: the memory limiter and counters called one by one vs `MemoryGate` +
`MemorySettler`; and single calls (an EVALSHA, a 4-HGETALL pipeline) through redis-py's client vs
gateway/state/connections.py. Sequential requests (concurrency 1): nothing batches, so this is the worst case for the outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis

from gateway.decisions.limits import Budget
from gateway.keys.identity import Identity
from gateway.limits.admission import Admission, DegradingGate, MemoryGate, RedisGate
from gateway.limits.budgets import Budgets, MemoryCounters
from gateway.limits.degrade import DegradingCounters, DegradingRateLimiter
from gateway.limits.ratelimit import MemoryRateLimiter, RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.settler import MemorySettler, RedisSettler
from gateway.limits.shared_state import SharedState
from gateway.state.connections import RedisConnections
from gateway.state.outbox import RedisOutbox

WHO = Identity(team="bench", key_id="abcdef123456", key_budget=Budget(Decimal(1000000), "month"), rpm=10**8,
               tpm=10**9)
WORST, ACTUAL, TOKENS, USED = Decimal("0.001"), Decimal("0.0007"), 500, 420


async def spend(kind: str, name: str, since: Any) -> Decimal:
    return Decimal(0)


def _rid() -> str:
    return f"gw-{uuid.uuid4().hex}"


def _paths(kind: str, limiter: Any, budgets: Budgets, admission: Admission,
           settler: Any) -> dict[str, Callable[[], Awaitable[None]]]:
    async def separate() -> None:
        rid = _rid()
        await limiter.check(WHO, TOKENS)
        res = await budgets.reserve(WHO, rid, WORST)
        await budgets.settle(res, ACTUAL)
        await limiter.adjust(WHO, TOKENS, USED)

    async def combined() -> None:
        res = await admission.admit(WHO, _rid(), TOKENS, WORST)
        settler.settle(WHO, res, ACTUAL, TOKENS, USED)

    return {f"{kind} separate": separate, f"{kind} combined": combined}


def redis_paths(r: Any, prefix: str) -> dict[str, Callable[[], Awaitable[None]]]:
    state = SharedState(r, prefix, "bench")
    counters, limiter = RedisCounters(r, prefix), RedisRateLimiter(r, prefix)
    dc, dl = DegradingCounters(counters, state), DegradingRateLimiter(limiter, state)
    budgets = Budgets(dc, spend)
    admission = Admission(DegradingGate(RedisGate(r, limiter, counters), dl, dc, state), budgets)
    settler = RedisSettler(RedisOutbox(RedisConnections(r), guard=state.call), budgets, counters, limiter,
                           local_counters=dc, local_limiter=dl)
    return _paths("redis", dl, budgets, admission, settler)


def call_paths(r: Any, prefix: str) -> dict[str, Callable[[], Awaitable[None]]]:
    """One Redis call through redis-py's client (as the request path made them) and through
    gateway/state/connections.py: an EVALSHA, and a pipeline of 4 HGETALL (as the prefix cache
    lookup was before it replicated its index in memory)."""
    script = r.register_script("return redis.call('GET', KEYS[1])")
    conns = RedisConnections(r)
    key = prefix + "x"

    async def client_evalsha() -> None:
        await script(keys=[key], args=[1, 2, 3])

    async def conns_evalsha() -> None:
        await conns.evalsha(script, [key], [1, 2, 3])

    async def client_pipeline() -> None:
        pipe = r.pipeline(transaction=False)
        for k in range(4):
            pipe.hgetall(f"{prefix}pc:{k}")
        await pipe.execute()

    async def conns_pipeline() -> None:
        await conns.execute([("HGETALL", f"{prefix}pc:{k}") for k in range(4)])

    return {"call evalsha client": client_evalsha, "call evalsha conns": conns_evalsha,
            "call pipe4 client": client_pipeline, "call pipe4 conns": conns_pipeline}


def memory_paths() -> dict[str, Callable[[], Awaitable[None]]]:
    counters, limiter = MemoryCounters(), MemoryRateLimiter()
    budgets = Budgets(counters, spend)
    return _paths("memory", limiter, budgets, Admission(MemoryGate(limiter, counters), budgets),
                  MemorySettler(budgets, counters, limiter))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    prefix = f"gw-ab-{uuid.uuid4().hex[:8]}:"
    pool = aioredis.BlockingConnectionPool.from_url("redis://127.0.0.1:6379/11", max_connections=64, timeout=5)
    r = aioredis.Redis.from_pool(pool)
    paths = {**redis_paths(r, prefix), **memory_paths(), **call_paths(r, prefix)}
    res: dict[str, list[float]] = {k: [] for k in paths}
    try:
        for fn in paths.values():  # warm: scripts loaded, counters seeded, connections open
            for _ in range(50):
                await fn()
            await asyncio.sleep(0.05)
        for rnd in range(args.rounds):
            order = list(paths.items())
            for name, fn in (order if rnd % 2 == 0 else order[::-1]):
                t0 = time.process_time()
                for _ in range(args.requests):
                    await fn()
                await asyncio.sleep(0.01)  # the last settlement lands (its CPU counted); 10 ms of idle is ~0 CPU
                res[name].append((time.process_time() - t0) / args.requests)
    finally:
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
    for name, v in res.items():
        print(f"{name:<18} median {statistics.median(v) * 1e6:7.1f} us/request  min {min(v) * 1e6:7.1f}")
    for kind in ("redis", "memory"):
        ratio = statistics.median(c / s for c, s in zip(res[f"{kind} combined"], res[f"{kind} separate"]))
        print(f"{kind}: combined / separate (median of per-round ratios) {ratio:.2f}x")
    for call in ("evalsha", "pipe4"):
        ratio = statistics.median(c / s for c, s in zip(res[f"call {call} conns"], res[f"call {call} client"]))
        print(f"{call}: connections / client (median of per-round ratios) {ratio:.2f}x")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
