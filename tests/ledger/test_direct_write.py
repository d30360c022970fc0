"""PostgreSQL: a lone write is awaited by its caller (no queue, no writer-task hop), never sharing the connection with
the writer task's batches, in order, and a write cut short by its caller's cancellation still lands, once."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any, Awaitable, Callable

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain import Usage
from gateway.ledger.engine_sink import EngineSink
from gateway.ledger.sinks import WriteOp
from gateway.ledger.tables import ledger
from gateway.ledger.writer import SqlLedger
from tests.ledger.test_inline_commit import spy_queue
from tests.ledger.test_writer import entry


async def statuses(engine: AsyncEngine) -> dict[str, list[str]]:
    """request_id -> the status of every row it has (a doubled row would show twice)."""
    async with engine.connect() as conn:
        found = (await conn.execute(sa.select(ledger.c.request_id, ledger.c.status))).all()
    out: dict[str, list[str]] = {}
    for rid, status in found:
        out.setdefault(rid, []).append(status)
    return out


def done(request_id: str) -> Any:
    return replace(entry(request_id), status="success", usage=Usage(3, 0, 2))


def count_batches(writer: SqlLedger) -> list[list[WriteOp]]:
    """Every batch the writer task commits."""
    seen: list[list[WriteOp]] = []
    commit = writer._commit

    async def spy(batch: list[WriteOp]) -> None:
        seen.append(list(batch))
        await commit(batch)

    writer._commit = spy  # type: ignore[method-assign]
    return seen


def wrap_inner_write(writer: SqlLedger, around: Callable[[Callable[[list[WriteOp]], Awaitable[int]], list[WriteOp]],
                                                          Awaitable[int]]) -> EngineSink:
    sink = writer._sink
    assert isinstance(sink, EngineSink)
    write = sink.write

    async def wrapped(batch: list[WriteOp]) -> int:
        return await around(write, batch)

    sink.write = wrapped  # type: ignore[method-assign]
    return sink


async def test_a_lone_write_commits_without_the_writer_task(direct: AsyncEngine, pg_url: str) -> None:
    writer = SqlLedger(direct, replica_id="rep-a", migrate=False)
    await writer.start()
    queued, batches = spy_queue(writer), count_batches(writer)
    other = await asyncpg.connect(pg_url)  # what another process sees
    try:
        await writer.open(entry("req-1"))
        assert await other.fetchval("SELECT status FROM ledger WHERE request_id = 'req-1'") == "in_flight"
        assert writer.direct_commits == 1 and writer.transactions == 1 and writer.pending_rows() == 0
        await writer.finish(done("req-1"), wait=True)
        assert await other.fetchval("SELECT status FROM ledger WHERE request_id = 'req-1'") == "success"
        assert writer.direct_commits == 2 and writer.transactions == 2
        assert queued == [] and batches == []
    finally:
        await other.close()
        await writer.stop()


async def test_direct_and_queued_writes_never_share_the_connection_and_keep_each_rows_order(
        direct: AsyncEngine) -> None:
    writer = SqlLedger(direct, replica_id="rep-a", migrate=False)
    await writer.start()
    batches = count_batches(writer)
    busy, overlaps, order = 0, 0, []

    async def exclusive(write: Callable[[list[WriteOp]], Awaitable[int]], batch: list[WriteOp]) -> int:
        nonlocal busy, overlaps
        busy += 1
        overlaps += busy > 1
        order.extend((op.kind, op.request_id) for op in batch)
        try:
            await asyncio.sleep(random.random() * 0.004)  # widen the window another writer could slip into
            return await write(batch)
        finally:
            busy -= 1

    wrap_inner_write(writer, exclusive)

    async def request(i: int) -> None:
        await asyncio.sleep(random.random() * 0.02)
        await writer.open(entry(f"r{i}"))
        await asyncio.sleep(random.random() * 0.01)  # the vendor
        await writer.finish(done(f"r{i}"), wait=True)

    try:
        random.seed(16)
        await asyncio.gather(*(request(i) for i in range(40)))
    finally:
        await writer.stop()
    assert overlaps == 0
    assert writer.direct_commits > 0 and batches  # both paths ran, concurrently
    for i in range(40):
        assert order.index(("insert", f"r{i}")) < order.index(("update", f"r{i}"))
    assert await statuses(direct) == {f"r{i}": ["success"] for i in range(40)}


@pytest.mark.parametrize("landed", [False, True], ids=["cut-before-commit", "cut-after-commit"])
async def test_a_lone_write_whose_caller_is_cancelled_still_lands_once(direct: AsyncEngine, landed: bool) -> None:
    """The pipeline cancels a request (a server shutting down); its row's insert may or may not have committed. The
    queue writes it anyway, ignoring its own earlier copy, before the request's final update."""
    writer = SqlLedger(direct, replica_id="rep-a", migrate=False)
    await writer.start()
    batches = count_batches(writer)
    gate = asyncio.Event()
    cut: list[int] = []

    async def held(write: Callable[[list[WriteOp]], Awaitable[int]], batch: list[WriteOp]) -> int:
        if batch[0].request_id == "cut" and not cut:
            cut.append(1)
            if landed:
                n = await write(batch)
                await gate.wait()
                return n
            await gate.wait()
        return await write(batch)

    wrap_inner_write(writer, held)
    try:
        await writer.open(entry("warm"))
        await writer.finish(done("warm"), wait=True)
        task = asyncio.create_task(writer.open(entry("cut")))
        await asyncio.sleep(0.05)
        assert cut and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.finish(done("cut"), wait=False)  # as the pipeline closes a cancelled request's books
    finally:
        await writer.stop()
    assert await statuses(direct) == {"warm": ["success"], "cut": ["success"]}
    assert [(op.kind, op.uncertain) for b in batches for op in b] == [("insert", True), ("update", False)]


async def test_a_lone_write_the_database_refuses_fails_its_caller_and_the_next_one_goes_through(
        direct: AsyncEngine) -> None:
    from gateway.errors import StateUnavailable

    writer = SqlLedger(direct, replica_id="rep-a", migrate=False)
    await writer.start()
    queued = spy_queue(writer)
    try:
        await writer.open(entry("dup"))
        await writer.finish(done("dup"), wait=True)
        with pytest.raises(StateUnavailable):  # the same request id again: refused (not an outage: not spooled)
            await writer.open(entry("dup"))
        assert writer.pending_rows() == 0
        await writer.open(entry("next"))
        await writer.finish(done("next"), wait=True)
        assert queued == [] and writer.direct_commits == 4
    finally:
        await writer.stop()
    assert await statuses(direct) == {"dup": ["success"], "next": ["success"]}


async def test_writes_queued_while_a_direct_write_holds_the_sink_form_one_batch(direct: AsyncEngine) -> None:
    """The writer task waits for the sink before it forms its batch: what queues meanwhile commits together."""
    writer = SqlLedger(direct, replica_id="rep-a", migrate=False)
    await writer.start()
    batches = count_batches(writer)
    gate = asyncio.Event()

    async def held(write: Callable[[list[WriteOp]], Awaitable[int]], batch: list[WriteOp]) -> int:
        if batch[0].request_id == "long":
            await gate.wait()
        return await write(batch)

    wrap_inner_write(writer, held)
    try:
        first = asyncio.create_task(writer.open(entry("long")))  # alone: direct, held at the sink
        await asyncio.sleep(0.05)
        others = []
        for i in range(3):  # "long" is open: queued, each after the writer task took the one before
            others.append(asyncio.create_task(writer.open(entry(f"r{i}"))))
            await asyncio.sleep(0.02)
        assert not any(t.done() for t in [first, *others])
        gate.set()
        await asyncio.gather(first, *others)
    finally:
        await writer.stop()
    assert writer.direct_commits == 1
    assert [[op.request_id for op in b] for b in batches] == [["r0", "r1", "r2"]]


async def test_after_a_batch_of_several_a_lone_write_takes_the_queue_once(direct: AsyncEngine) -> None:
    """Writes arriving together (the writer's last batch held several) mean a lone write is likely the first of a
    wave: it takes the queue, so the others share its commit instead of waiting for its round trip. A batch of one
    later, lone writes go direct again."""
    writer = SqlLedger(direct, replica_id="rep-a", migrate=False)
    await writer.start()
    queued, batches = spy_queue(writer), count_batches(writer)
    try:
        await writer.open(entry("a"))
        await asyncio.gather(writer.open(entry("b")), writer.open(entry("c")))  # "a" is open: queued, one batch
        await asyncio.gather(*(writer.finish(done(r), wait=True) for r in "abc"))
        assert [len(b) for b in batches] == [2, 3] and writer.direct_commits == 1
        await writer.open(entry("d"))  # alone, but just after a batch of several
        assert [op.kind for op in queued if op.request_id == "d"] == ["insert"] and writer.direct_commits == 1
        await writer.finish(done("d"), wait=True)  # alone after a batch of one: direct
        assert writer.direct_commits == 2 and len(batches) == 3
    finally:
        await writer.stop()
    assert await statuses(direct) == {r: ["success"] for r in "abcd"}
