"""A lone write is committed by its caller (no queue, no writer-task hop); concurrent writes still share commits."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain import Usage
from gateway.ledger.sinks import WriteOp
from gateway.ledger.sqlite_sink import SqliteSink
from gateway.ledger.writer import SqlLedger
from tests.ledger.test_writer import entry, fetch


def spy_queue(writer: SqlLedger) -> list[Any]:
    """Every op the writer's queue is handed, in order."""
    seen: list[Any] = []
    put = writer._queue.put_nowait

    def put_nowait(item: Any) -> None:
        seen.append(item)
        put(item)

    writer._queue.put_nowait = put_nowait  # type: ignore[method-assign]
    return seen


def raw_status(path: str, request_id: str) -> str | None:
    """Read with a connection of our own: what another process would see."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT status FROM ledger WHERE request_id = ?", (request_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


async def test_a_lone_write_is_committed_by_its_caller(engine: AsyncEngine, ledger_url: str) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    queued = spy_queue(writer)
    try:
        e = entry("req-1")
        await writer.open(e)
        if not ledger_url.startswith("sqlite"):
            # PostgreSQL: awaited by its caller, not inline (tests/ledger/test_direct_write.py), still not queued.
            assert writer.direct_commits == 1 and queued == []
            return
        sink = writer._sink
        assert isinstance(sink, SqliteSink)
        path = ledger_url.removeprefix("sqlite:///")
        assert raw_status(path, "req-1") == "in_flight"  # durable and visible to others when open() returns
        assert queued == [] and writer.direct_commits == 1 and writer.transactions == 1
        assert sink.inline_commits == 1 and writer.pending_rows() == 0

        await writer.finish(replace(e, status="success", usage=Usage(3, 0, 2)), wait=True)
        assert raw_status(path, "req-1") == "success"
        assert queued == [] and writer.direct_commits == 2 and writer.transactions == 2

        # Unwaited (a streamed response that ended): queued, and pending until the writer commits it.
        await writer.open(entry("req-2"))
        await writer.finish(replace(entry("req-2"), status="client_disconnected"), wait=False)
        assert [op.kind for op in queued] == ["update"] and writer.pending_rows() == 1
    finally:
        await writer.stop()
    assert writer.pending_rows() == 0 and (await fetch(engine, "req-2")).status == "client_disconnected"


async def test_a_write_while_another_row_is_open_takes_the_queue(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    queued = spy_queue(writer)
    try:
        await writer.open(entry("long"))  # still running (say, a stream)
        direct, before = writer.direct_commits, len(queued)
        await writer.open(entry("short"))
        await writer.finish(replace(entry("short"), status="success"), wait=True)
        assert [op.kind for op in queued[before:]] == ["insert", "update"] and writer.direct_commits == direct
        # Only its own row open: an in-place update (still in flight, after a fallback) is alone again.
        await writer.finish(replace(entry("long"), provider="deepseek"), wait=True)
        assert len(queued) == before + 2 and writer.direct_commits == direct + 1
    finally:
        await writer.stop()
    assert (await fetch(engine, "short")).status == "success"
    assert (await fetch(engine, "long")).provider == "deepseek"


async def test_concurrent_requests_share_commits_instead_of_committing_alone(engine: AsyncEngine) -> None:
    """Each request awaits its vendor between opening and finishing its row (as the pipeline does), so concurrent
    requests find each other's rows open and their writes go to the group commit."""
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()

    async def request(i: int) -> None:
        await writer.open(entry(f"req-{i}"))
        await asyncio.sleep(0.01)  # the vendor call
        await writer.finish(replace(entry(f"req-{i}"), status="success", usage=Usage(1, 0, 1)), wait=True)

    try:
        await asyncio.gather(*(request(i) for i in range(64)))
    finally:
        await writer.stop()
    assert writer.direct_commits <= 2  # at most the first open and the last finish find no sibling
    assert writer.transactions <= 8, writer.transactions  # 128 writes


async def test_an_inline_commit_that_finds_the_database_locked_is_queued_not_lost(
        engine: AsyncEngine, ledger_url: str) -> None:
    if not ledger_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    path = ledger_url.removeprefix("sqlite:///")
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    queued = spy_queue(writer)
    sink = writer._sink
    assert isinstance(sink, SqliteSink)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write lock
        task = asyncio.create_task(writer.open(entry("req-1")))
        await asyncio.sleep(0.3)
        assert not task.done()  # the inline try failed at once; the writer waits for the lock in its thread
        assert [op.kind for op in queued] == ["insert"] and writer.pending_rows() == 1
        other.execute("COMMIT")
        await asyncio.wait_for(task, 10)
        assert raw_status(path, "req-1") == "in_flight"
        assert writer.direct_commits == 0 and sink.thread_commits == 1 and writer.pending_rows() == 0
        assert writer.transactions == 1
        # The lock gone, the next lone write is inline again.
        await writer.finish(replace(entry("req-1"), status="success"), wait=True)
        assert writer.direct_commits == 1 and len(queued) == 1
    finally:
        other.close()
        await writer.stop()


async def test_a_lone_write_is_durable_when_its_call_returns_with_no_await_to_cancel_in_between(
        engine: AsyncEngine, ledger_url: str) -> None:
    if not ledger_url.startswith("sqlite"):
        pytest.skip("SQLite only: a PostgreSQL write awaits its round trip")
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    try:
        await writer.open(entry("req-1"))
        coro = writer.finish(replace(entry("req-1"), status="client_disconnected"), wait=True)
        with pytest.raises(StopIteration):
            coro.send(None)  # runs to completion in one step: the commit never yields to the loop
        assert writer.direct_commits == 2
    finally:
        await writer.stop()
    assert (await fetch(engine, "req-1")).status == "client_disconnected"


async def test_commit_now_raises_having_committed_nothing(sqlite_engine: AsyncEngine, sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    sink = SqliteSink(path)
    await sink.start()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        beat = WriteOp("heartbeat", {"replica_id": "r1", "at": datetime.now(timezone.utc)})
        assert sink.can_commit_now()
        with pytest.raises(sqlite3.OperationalError):
            sink.commit_now([beat])
        assert sink.inline_commits == 0
        other.execute("ROLLBACK")
        sink.commit_now([beat])
        assert sink.inline_commits == 1
    finally:
        other.close()
        await sink.close()
