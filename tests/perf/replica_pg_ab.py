"""`python -m tests.perf.replica_pg_ab postgresql://postgres@127.0.0.1:5432/<a fresh database>`. A/B in process, c1: CPU of one request's two ledger writes on PostgreSQL: (a) SqlLedger open+finish (queue +
EngineSink, SQLAlchemy executemany on asyncpg), (b) EngineSink.write directly, (c) asyncpg's own prepared statements
with SQLAlchemy's bind processors (same stored values). Interleaved rounds, medians. Since EngineSink writes rows as
prepared statements itself, (b) and (c) should cost the same; before, (b) was SQLAlchemy's executemany.
The database must exist (createdb) and is left for the caller to drop."""
import asyncio, time, uuid, statistics, sys
from dataclasses import replace
from datetime import datetime, timezone
import asyncpg
from gateway import db as gdb
from gateway.domain import LedgerEntry, Usage
from gateway.ledger.writer import SqlLedger
from gateway.ledger.engine_sink import EngineSink
from gateway.ledger.sinks import UPDATE_STATEMENT, WriteOp, _update_binds
from gateway.ledger.tables import ledger, entry_values, UPDATABLE

URL = sys.argv[1]
usage = Usage(231, 0, 76, source="provider")

def entry(i, tag):
    return LedgerEntry(request_id=f"ab-{tag}-{i}", started_at=datetime.now(timezone.utc), team="bench", key_id="k1",
                       route="auto", provider="deepseek", model="deepseek-v2", upstream_model="deepseek-chat",
                       price_version=1, replica_id="ab-replica", prompt_tokens_estimate=231, stream=False)

async def main():
    engine = gdb.create_engine(URL)
    await gdb.upgrade(engine)
    led = SqlLedger(engine, replica_id="ab-replica", liveness_lock=False)
    await led.start()
    sink = EngineSink(engine)
    raw = await asyncpg.connect(URL)
    d = engine.dialect
    sample = entry_values(entry(0, "x"), datetime.now(timezone.utc))
    ins_c = ledger.insert().compile(dialect=d, column_keys=list(sample))
    ins_sql, ins_pos, ins_proc = str(ins_c), ins_c.positiontup, ins_c._bind_processors
    upd_c = UPDATE_STATEMENT.compile(dialect=d)
    upd_sql, upd_pos, upd_proc = str(upd_c), upd_c.positiontup, upd_c._bind_processors
    ins_stmt = await raw.prepare(ins_sql); upd_stmt = await raw.prepare(upd_sql)
    def args(values, pos, proc):
        return [proc[k](values[k]) if k in proc else values[k] for k in pos]
    async def a(i, tag):
        e = entry(i, tag); await led.open(e)
        await led.finish(replace(e, status="success", usage=usage, attempts=1, latency_ms=5), wait=True)
    async def b(i, tag):
        e = entry(i, tag); now = datetime.now(timezone.utc)
        await sink.write([WriteOp("insert", entry=e, at=now)])
        await sink.write([WriteOp("update", entry=replace(e, status="success", usage=usage, attempts=1, latency_ms=5), at=now)])
    async def c(i, tag):
        e = entry(i, tag); now = datetime.now(timezone.utc)
        await ins_stmt.fetch(*args(entry_values(e, now), ins_pos, ins_proc))
        u = _update_binds([entry_values(replace(e, status="success", usage=usage, attempts=1, latency_ms=5), now)])[0]
        await upd_stmt.fetch(*args(u, upd_pos, upd_proc))
    res = {"a SqlLedger (queue + SQLAlchemy)": [], "b EngineSink.write (SQLAlchemy)": [], "c asyncpg prepared": []}
    fns = dict(zip(res, (a, b, c)))
    for rnd in range(6):
        names = list(res) if rnd % 2 == 0 else list(res)[::-1]
        for name in names:
            tag = uuid.uuid4().hex[:6]
            for i in range(20): await fns[name](i, tag + "w")
            t0 = time.process_time()
            n = 200
            for i in range(n): await fns[name](i, tag)
            res[name].append((time.process_time() - t0) / n)
    # the same rows? compare one of each
    rows = await raw.fetch("select request_id, started_at, finished_at, total_cost, status, input_tokens from ledger where request_id like 'ab-%-1' order by id limit 3")
    print([dict(r) for r in rows][:3])
    await raw.close(); await sink.close(); await led.stop(); await engine.dispose()
    for k, v in res.items():
        print(f"{k:<36} median {statistics.median(v)*1e6:6.0f} us CPU per request (open+finish), min {min(v)*1e6:6.0f}")

if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
