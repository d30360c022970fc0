"""WAL checkpoints run beside the commits, not in front of them, and a WAL over its cap makes the writer wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timezone
from typing import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger.checkpoint import CheckpointResult
from gateway.ledger.sinks import WriteOp
from gateway.ledger.sqlite_sink import SqliteSink
from gateway.ledger.tables import entry_values
from gateway.ledger.writer import SqlLedger
from tests.ledger.test_writer import entry


def insert(request_id: str) -> WriteOp:
    return WriteOp("insert", entry_values(entry(request_id), datetime.now(timezone.utc)))


def rows(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])
    finally:
        conn.close()


def wal_frames(path: str) -> int:
    """The WAL's valid frames, read from the file (not by a checkpoint, which would change what it measures):
    frames carry the salts of the WAL header; a restart writes new salts and starts again from the first frame."""
    with open(path + "-wal", "rb") as f:
        data = f.read()
    if len(data) < 32:
        return 0
    page = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    n, at = 0, 32
    while at + 24 + page <= len(data) and data[at + 8:at + 16] == salts:
        n += 1
        at += 24 + page
    return n


class Gate:
    """Makes a checkpointer's checkpoints wait (in their thread) until opened."""

    def __init__(self, real: Callable[[], CheckpointResult]) -> None:
        self.real = real
        self.open = threading.Event()
        self.entered = threading.Event()

    def __call__(self) -> CheckpointResult:
        self.entered.set()
        if not self.open.wait(10):
            raise TimeoutError("gate never opened")
        return self.real()


@pytest.fixture
def path(sqlite_engine: AsyncEngine, sqlite_url: str) -> str:
    return sqlite_url.removeprefix("sqlite:///")


@pytest.fixture
async def sink(path: str) -> AsyncIterator[SqliteSink]:
    s = SqliteSink(path, checkpoint_pages=4, wal_cap_pages=40)
    await s.start()
    yield s
    await s.close()


async def test_commits_go_on_while_a_checkpoint_runs(path: str) -> None:
    sink = SqliteSink(path, checkpoint_pages=1, wal_cap_pages=100_000)
    await sink.start()
    ck = sink.checkpointer
    gate = Gate(ck.checkpoint_sync)
    ck.checkpoint_sync = gate  # type: ignore[method-assign]
    try:
        sink.commit_now([insert("first")])  # due at once (1 page): fired, not awaited
        assert ck.running and ck.background == 1
        assert await asyncio.to_thread(gate.entered.wait, 5)  # it is in the database now, and stuck there
        for i in range(10):
            sink.commit_now([insert(f"inline-{i}")])
            assert await sink.write([insert(f"queued-{i}")]) == 1
            await sink.after_batch()  # the writer's maintenance does not wait for it
        assert rows(path) == 21  # all committed and visible meanwhile
        assert ck.running and ck.background == 1 and ck.waited == 0  # one at a time
    finally:
        gate.open.set()
    while ck.running:
        await asyncio.sleep(0.01)
    assert ck.last is not None and ck.last.log_frames > 0 and not ck.last.busy
    await sink.close()


async def test_a_wal_over_the_cap_makes_the_writer_wait_for_a_checkpoint_that_restarts_it(
        sink: SqliteSink, path: str) -> None:
    ck = sink.checkpointer
    for i in range(12):  # ~48 pages by the estimate, past the cap of 40, with no chance to report (no yield)
        sink.commit_now([insert(f"r{i}")])
    assert ck.over_cap and not sink.can_commit_now()  # lone writes go to the writer, which will wait
    before = wal_frames(path)
    assert before > 40
    gate = Gate(ck.checkpoint_sync)
    ck.checkpoint_sync = gate  # type: ignore[method-assign]
    waiting = asyncio.create_task(sink.after_batch())
    assert await asyncio.to_thread(gate.entered.wait, 5)
    await asyncio.sleep(0.1)
    assert not waiting.done() and not sink.can_commit_now()  # the writer is held until the WAL is copied
    gate.open.set()
    await asyncio.wait_for(waiting, 5)
    assert ck.waited == 1 and not ck.over_cap and sink.can_commit_now()
    assert ck.last is not None and ck.last.complete
    sink.commit_now([insert("after")])  # the first commit after a complete checkpoint restarts the WAL
    assert wal_frames(path) < 10 < before
    assert rows(path) == 13


async def test_a_reader_holding_the_wal_does_not_make_every_batch_wait(sink: SqliteSink, path: str) -> None:
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM ledger").fetchone()  # a report's snapshot: its frames cannot be copied
    try:
        sink.commit_now([insert("r0")])
        await asyncio.sleep(0)
        for i in range(1, 12):
            sink.commit_now([insert(f"r{i}")])
        assert sink.checkpointer.over_cap
        await sink.after_batch()
        ck = sink.checkpointer
        assert ck.waited == 1 and ck.last is not None and not ck.last.complete
        assert not ck.over_cap  # waiting again per batch would not free the reader's frames
        sink.commit_now([insert("next")])
        await sink.after_batch()
        assert ck.waited == 1
    finally:
        reader.execute("ROLLBACK")
        reader.close()


async def test_the_ledger_writer_waits_for_the_checkpoint_when_over_the_cap(
        sqlite_engine: AsyncEngine, path: str) -> None:
    writer = SqlLedger(sqlite_engine, replica_id="rep-a", migrate=False)
    await writer.start()
    sink = writer._sink
    assert isinstance(sink, SqliteSink)
    ck = sink.checkpointer
    gate = Gate(ck.checkpoint_sync)
    ck.checkpoint_sync = gate  # type: ignore[method-assign]
    try:
        ck.over_cap = True  # as if the WAL had grown past the cap
        await writer.open(entry("a"))  # alone, but not inline: the writer commits it, then checkpoints
        assert writer.direct_commits == 0 and rows(path) == 1
        assert await asyncio.to_thread(gate.entered.wait, 5)
        b = asyncio.create_task(writer.open(entry("b")))
        await asyncio.sleep(0.2)
        assert not b.done() and rows(path) == 1  # held behind the checkpoint
        gate.open.set()
        await asyncio.wait_for(b, 5)
        assert rows(path) == 2 and ck.waited == 1 and not ck.over_cap
        await writer.finish(replace(entry("a"), status="success"), wait=True)  # "b" is open: queued
        await writer.finish(replace(entry("b"), status="success"), wait=True)
        assert writer.direct_commits == 1  # alone, and inline again
    finally:
        gate.open.set()
        await writer.stop()
