"""`python -m tests.perf.replica_pg_ab postgresql://postgres@127.0.0.1:5432/<a fresh database> [--c64]`.

A/B in process on uvloop, interleaved rounds, medians: the CPU (this process alone) of one request's two ledger
writes on PostgreSQL at concurrency 1 (open, then finish waited), each variant on the same database:
  queue   SqlLedger with a spool directory (as the gateway runs it), every write through the writer task's queue
          (the path before lone writes went direct);
  direct  the same SqlLedger, a lone write awaited by its caller (`_write_direct`): what the gateway does now;
  sink    EngineSink.write, no writer, no spool: the sink's own cost;
  raw     asyncpg's prepared statements fed SQLAlchemy's bind processors (the same stored values): the floor.
With --c64: 64 concurrent requests (open, a 1 ms "vendor", finish) through the queue and the direct ledgers; CPU per
request and committed transactions per request (the ledger's own count: one per batch statement).
The database must exist (createdb) and is left for the caller to drop."""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable

import asyncpg

from gateway import db as gdb
from gateway.decisions.pricing import price_usage
from gateway.domain import LedgerEntry, Price, PriceVersion, Usage
from gateway.ledger.engine_sink import EngineSink
from gateway.ledger.sinks import UPDATE_STATEMENT, WriteOp, _update_binds
from gateway.ledger.tables import entry_values, ledger
from gateway.ledger.writer import SqlLedger

usage = Usage(231, 0, 76, source="provider")
# Priced as the gateway prices a completed row: every money column set.
PRICE = Price("CNY", 1_000_000, Decimal("1"), Decimal("2"), Decimal("0.1"))
VERSION = PriceVersion(1, datetime(2026, 1, 1, tzinfo=timezone.utc), "CNY", {}, {("deepseek", "deepseek-v2"): PRICE})
COST = price_usage(usage, PRICE, VERSION, datetime(2026, 1, 1, tzinfo=timezone.utc))


def entry(i: int, tag: str, replica: str = "ab-replica") -> LedgerEntry:
    return LedgerEntry(request_id=f"ab-{tag}-{i}", started_at=datetime.now(timezone.utc), team="bench", key_id="k1",
                       route="auto", provider="deepseek", model="deepseek-v2", upstream_model="deepseek-chat",
                       price_version=1, replica_id=replica, prompt_tokens_estimate=231, stream=False)


def done(e: LedgerEntry) -> LedgerEntry:
    return replace(e, status="success", usage=usage, cost=COST, baseline_cost=COST.total_reporting, attempts=1,
                   latency_ms=5)


async def ledger_for(engine: Any, replica: str, spool: str, direct: bool) -> SqlLedger:
    led = SqlLedger(engine, replica_id=replica, liveness_lock=False, migrate=False, spool_dir=spool)
    await led.start()
    led._sink.writes_direct = direct  # the A/B switch: False sends every write to the writer task
    return led


async def main(url: str, c64: bool) -> None:
    engine = gdb.create_engine(url)
    await gdb.upgrade(engine)
    spool = tempfile.mkdtemp(prefix="pg-ab-spool-")
    queued = await ledger_for(engine, "ab-queue", spool, False)
    direct = await ledger_for(engine, "ab-direct", spool, True)
    sink = EngineSink(engine)
    raw = await asyncpg.connect(url)
    d = engine.dialect
    sample = entry_values(entry(0, "x"), datetime.now(timezone.utc))
    ins_c = ledger.insert().compile(dialect=d, column_keys=list(sample))
    upd_c = UPDATE_STATEMENT.compile(dialect=d)
    ins_stmt, upd_stmt = await raw.prepare(str(ins_c)), await raw.prepare(str(upd_c))

    def args(values: dict[str, Any], compiled: Any) -> list[Any]:
        proc = compiled._bind_processors
        return [proc[k](values[k]) if k in proc else values[k] for k in compiled.positiontup]

    async def through(led: SqlLedger, i: int, tag: str) -> None:
        e = entry(i, tag, led.replica_id)  # as the gateway's: no replace() in open()
        await led.open(e)
        await led.finish(done(e), wait=True)

    async def by_sink(i: int, tag: str) -> None:
        e = entry(i, tag)
        now = datetime.now(timezone.utc)
        await sink.write([WriteOp("insert", entry=e, at=now)])
        await sink.write([WriteOp("update", entry=done(e), at=now)])

    async def by_raw(i: int, tag: str) -> None:
        e = entry(i, tag)
        now = datetime.now(timezone.utc)
        await ins_stmt.fetch(*args(entry_values(e, now), ins_c))
        await upd_stmt.fetch(*args(_update_binds([entry_values(done(e), now)])[0], upd_c))

    fns: dict[str, Callable[[int, str], Awaitable[None]]] = {
        "queue (writer task)": lambda i, t: through(queued, i, t),
        "direct (caller writes)": lambda i, t: through(direct, i, t),
        "sink (EngineSink.write)": by_sink, "raw (asyncpg prepared)": by_raw}
    res: dict[str, list[float]] = {k: [] for k in fns}
    for rnd in range(10):
        for name in (list(fns) if rnd % 2 == 0 else list(fns)[::-1]):
            tag = uuid.uuid4().hex[:6]
            for i in range(20):
                await fns[name](i, tag + "w")
            t0 = time.process_time()
            n = 300
            for i in range(n):
                await fns[name](i, tag)
            res[name].append((time.process_time() - t0) / n)
    print("c1, CPU per request (open + finish), 10 interleaved rounds of 300:")
    for k, v in res.items():
        print(f"  {k:<26} median {statistics.median(v) * 1e6:6.0f} us, min {min(v) * 1e6:6.0f}")
    q, dr = statistics.median(res["queue (writer task)"]), statistics.median(res["direct (caller writes)"])
    print(f"  direct / queue: {dr / q:.2f}x; direct writes {direct.direct_commits}, queue {queued.direct_commits}")
    if c64:
        await concurrent({"queue": queued, "direct": direct})
    await raw.close()
    await sink.close()
    await queued.stop()
    await direct.stop()
    await engine.dispose()


async def concurrent(ledgers: dict[str, SqlLedger]) -> None:
    async def request(led: SqlLedger, i: int, tag: str) -> None:
        e = entry(i, tag, led.replica_id)
        await led.open(e)
        await asyncio.sleep(0.001)  # the vendor
        await led.finish(done(e), wait=True)

    res: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ledgers}
    for rnd in range(6):
        for name in (list(ledgers) if rnd % 2 == 0 else list(ledgers)[::-1]):
            led, tag = ledgers[name], uuid.uuid4().hex[:6]
            n = 64 * 30
            sem = asyncio.Semaphore(64)

            async def one(i: int) -> None:
                async with sem:
                    await request(led, i, tag)

            tx, dc = led.transactions, led.direct_commits
            t0 = time.process_time()
            await asyncio.gather(*(one(i) for i in range(n)))
            cpu = (time.process_time() - t0) / n
            res[name].append((cpu, (led.transactions - tx) / n, (led.direct_commits - dc) / n))
    print("c64 (64 concurrent, 1 ms vendor), per request, 6 interleaved rounds of 1920:")
    for k, v in res.items():
        print(f"  {k:<8} CPU median {statistics.median(c for c, _, _ in v) * 1e6:6.0f} us, transactions "
              f"{statistics.median(t for _, t, _ in v):.3f} (of which direct {statistics.median(d for _, _, d in v):.3f})")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], "--c64" in sys.argv[2:]))
