"""The SQLite sink commits on the loop's thread, and in its own thread when another process holds the lock."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timezone

from gateway.ledger.sinks import WriteOp
from gateway.ledger.sqlite_sink import SqliteSink


async def test_sqlite_sink_waits_off_the_loop_while_another_connection_holds_the_write_lock(sqlite_engine, sqlite_url):
    path = sqlite_url.removeprefix("sqlite:///")
    sink = SqliteSink(path)
    await sink.start()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # what a second worker or `gateway ledger recover` would hold
    beat = WriteOp("heartbeat", {"replica_id": "r1", "at": datetime(2026, 11, 1, tzinfo=timezone.utc)})
    write = asyncio.create_task(sink.write([beat]))
    await asyncio.sleep(0.3)
    assert not write.done()  # waiting for the lock, in the thread: the loop is free (this line runs)
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(write, 10) == 1
    assert sink.thread_commits == 1 and sink.inline_commits == 0
    await sink.write([beat])
    assert sink.inline_commits == 1  # no contention: committed on the loop's thread
    await sink.close()


async def test_postgresql_prepared_writes_store_exactly_what_sqlalchemy_stores(engine, ledger_url) -> None:  # type: ignore[no-untyped-def]
    """EngineSink writes PostgreSQL rows as asyncpg prepared statements that SQLAlchemy compiled: every column,
    read back as text, equals the row SQLAlchemy's own executemany stores (money digits, times, booleans)."""
    from dataclasses import replace
    from datetime import timedelta
    from decimal import Decimal

    import asyncpg

    from gateway.decisions.pricing import price_usage
    from gateway.domain import Usage
    from gateway.ledger.engine_sink import EngineSink, _write
    from gateway.ledger.tables import ledger
    from tests.ledger.test_writer import PRICE, T0, VERSION, entry

    if not ledger_url.startswith("postgresql"):
        return
    usage = Usage(100, 20, 50, cache_write_tokens=30)
    cost = price_usage(usage, PRICE, VERSION, T0)
    at = T0 + timedelta(seconds=2, microseconds=5)

    def ops(rid: str) -> tuple[WriteOp, WriteOp]:
        e = replace(entry(rid), started_at=T0 + timedelta(microseconds=7), api="responses")
        done = replace(e, status="success", usage=usage, cost=cost, latency_ms=5,
                       baseline_cost=Decimal("0.1234567890123456789012"))
        return WriteOp("insert", entry=e, at=at), WriteOp("update", entry=done, at=at)

    sink = EngineSink(engine)
    fast_open, fast_done = ops("req-fast")
    assert await sink.write([fast_open]) == 1
    assert await sink.write([fast_done]) == 1
    assert await sink.write([WriteOp("insert", entry=replace(entry("req-fast-2"), stream=False), at=at),
                             WriteOp("insert", entry=entry("req-fast-3"), at=at)]) == 1  # a batch: one statement
    await sink.close()
    slow_open, slow_done = ops("req-slow")
    async with engine.begin() as conn:
        await _write(conn, [slow_open.row()], [], None)
    async with engine.begin() as conn:
        from gateway.ledger.sinks import UPDATE_STATEMENT, _update_binds
        await conn.execute(UPDATE_STATEMENT, _update_binds([slow_done.row()]))
    columns = [c.name for c in ledger.columns if c.name not in ("id", "request_id")]
    raw = await asyncpg.connect(ledger_url)
    try:
        rows = {r["request_id"]: r for r in await raw.fetch(
            "SELECT request_id, " + ", ".join(f"{c}::text AS {c}" for c in columns) + " FROM ledger")}
    finally:
        await raw.close()
    fast, slow = dict(rows["req-fast"]), dict(rows["req-slow"])
    fast.pop("request_id"), slow.pop("request_id")
    assert fast == slow
    assert fast["status"] == "success" and fast["baseline_cost"] == "0.1234567890123456789012"
    assert fast["stream"] == "true" and rows["req-fast-2"]["stream"] == "false" and rows["req-fast-3"]["status"] == "in_flight"


async def test_postgresql_prepared_write_errors_are_sqlalchemy_errors(engine, ledger_url) -> None:  # type: ignore[no-untyped-def]
    """A row the database refuses raises SQLAlchemy's IntegrityError (not an outage: the spool must not take it),
    as SQLAlchemy's own executemany did."""
    import pytest
    import sqlalchemy as sa

    from gateway.ledger.engine_sink import EngineSink
    from gateway.ledger.spool import is_outage
    from tests.ledger.test_writer import T0, entry

    if not ledger_url.startswith("postgresql"):
        return
    sink = EngineSink(engine)
    try:
        await sink.write([WriteOp("insert", entry=entry("dup"), at=T0)])
        with pytest.raises(sa.exc.IntegrityError) as raised:
            await sink.write([WriteOp("insert", entry=entry("dup"), at=T0)])
        assert not is_outage(raised.value)
        await sink.write([WriteOp("insert", entry=entry("after"), at=T0)])  # the connection is usable again
    finally:
        await sink.close()


async def test_postgresql_prepared_writes_still_refuse_what_the_column_types_refuse(engine, ledger_url) -> None:  # type: ignore[no-untyped-def]
    """The prepared path skips SQLAlchemy's processors only for values they return unchanged: negative or non-finite
    money and naive times are still refused, and an int amount is still stored as its Decimal."""
    from dataclasses import replace
    from decimal import Decimal

    import pytest

    from gateway.ledger.engine_sink import EngineSink
    from tests.ledger.test_writer import T0, entry

    if not ledger_url.startswith("postgresql"):
        return
    sink = EngineSink(engine)
    try:
        for bad in (Decimal("-0.01"), Decimal("NaN"), Decimal("Infinity")):
            with pytest.raises(ValueError):
                await sink.write([WriteOp("update", entry=replace(entry("r"), status="success", baseline_cost=bad),
                                          at=T0)])
        with pytest.raises(ValueError):
            await sink.write([WriteOp("insert", entry=replace(entry("naive"), started_at=T0.replace(tzinfo=None)),
                                      at=T0)])
        await sink.write([WriteOp("insert", entry=entry("r"), at=T0)])
        await sink.write([WriteOp("update", entry=replace(entry("r"), status="success", baseline_cost=Decimal("-0")),
                                  at=T0)])
        await sink.write([WriteOp("update", entry=replace(entry("r"), status="success", baseline_cost=3), at=T0)])  # type: ignore[arg-type]
        async with engine.connect() as conn:
            import sqlalchemy as sa

            from gateway.ledger.tables import ledger
            stored = (await conn.execute(sa.select(ledger.c.baseline_cost).where(ledger.c.request_id == "r"))).scalar()
        assert stored == Decimal(3)
    finally:
        await sink.close()
