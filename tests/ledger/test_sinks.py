"""The SQLite sink commits on the loop's thread, and in its own thread when another process holds the lock."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timezone

from gateway.ledger.sinks import SqliteSink, WriteOp


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
