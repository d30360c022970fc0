"""`python -m tests.perf.replica_redis_ab` (Redis db 11, keys under a random prefix, deleted at the end). A/B: CPU per request of the replica path's Redis calls (rate limit check, budget reserve+settle, a 4-HGETALL
pipeline), redis-py with hiredis vs its pure-Python parser, in process, interleaved, best of rounds."""
import asyncio, time, uuid, statistics
from decimal import Decimal
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
from gateway.limits.ratelimit import RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.budgets import Budgets
from gateway.keys.identity import Identity
from gateway.decisions.limits import Budget

async def spend(kind, name, since): return Decimal(0)

async def one_round(parser, n, prefix):
    r = aioredis.Redis(connection_pool=aioredis.ConnectionPool(host="127.0.0.1", port=6379, db=11, parser_class=parser))
    rl = RedisRateLimiter(r, prefix); b = Budgets(RedisCounters(r, prefix), spend)
    ident = Identity(team="bench", key_id="abcdef123456", key_budget=Budget(Decimal(1000000), "month"), rpm=10**8, tpm=10**9)
    async def req(i):
        await rl.check(ident, 500)
        res = await b.reserve(ident, f"gw-{uuid.uuid4().hex}", Decimal("0.001"))
        p = r.pipeline(transaction=False)
        for k in range(4): p.hgetall(f"{prefix}pc:{k}")
        await p.execute()
        await b.settle(res, Decimal("0.0007"))
    for i in range(50): await req(i)
    t0 = time.process_time()
    for i in range(n): await req(i)
    cpu = (time.process_time() - t0) / n
    await r.aclose()
    return cpu

async def main():
    prefix = f"gw-ab-{uuid.uuid4().hex[:8]}:"
    res = {"hiredis": [], "python": []}
    for rnd in range(6):
        order = [("hiredis", _AsyncHiredisParser), ("python", _AsyncRESP2Parser)]
        if rnd % 2: order.reverse()
        for name, parser in order:
            res[name].append(await one_round(parser, 400, prefix))
    c = aioredis.Redis(host="127.0.0.1", port=6379, db=11)
    keys = [k async for k in c.scan_iter(match=prefix + "*")]
    if keys: await c.delete(*keys)
    await c.aclose()
    for k, v in res.items():
        print(k, "median us/request", round(statistics.median(v) * 1e6), "min", round(min(v) * 1e6))
    print("ratio python/hiredis (median of rounds)", round(statistics.median(p / h for p, h in zip(res["python"], res["hiredis"])), 2))

if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
