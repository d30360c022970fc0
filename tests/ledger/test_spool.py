"""The ledger through a database outage: writes spool to the journal, drain in order exactly once, survive a
crash, and are not mistaken for interrupted requests. PostgreSQL is reached through a proxy the test cuts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine
from gateway.domain import LedgerEntry, Usage
from gateway.ledger import journal as J
from gateway.ledger.recovery import recover
from gateway.ledger.spool import apply_records, is_outage
from gateway.ledger.tables import ledger
from gateway.ledger.writer import SqlLedger
from tests.e2e.cutproxy import CutProxy


def now() -> datetime:
    return datetime.now(timezone.utc)


def entry(request_id: str, replica: str = "rep-a") -> LedgerEntry:
    return LedgerEntry(request_id=request_id, started_at=now(), team="finance", key_id="key1", route="auto",
                       provider="openai", model="gpt-4o", upstream_model="gpt-4o", price_version=1,
                       replica_id=replica, prompt_tokens_estimate=120, stream=False)


def done(e: LedgerEntry, output: int = 7) -> LedgerEntry:
    return replace(e, status="success", usage=Usage(100, 0, output), attempts=1, latency_ms=5)


async def rows(engine: AsyncEngine) -> dict[str, sa.Row]:  # type: ignore[type-arg]
    async with engine.connect() as conn:
        found = (await conn.execute(sa.select(ledger))).all()
    return {r.request_id: r for r in found}


async def wait_until(cond, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def restored(proxy: CutProxy, w: SqlLedger, direct: AsyncEngine) -> dict[str, sa.Row]:  # type: ignore[type-arg]
    """Bring the database back, wait for the journal to drain, and read every row."""
    proxy.restore()
    await wait_until(lambda: not w.spooling)
    return await rows(direct)


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[CutProxy, str]]:
    parts = urlsplit(pg_url)
    with CutProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy, pg_url.replace(f"{parts.hostname}:{parts.port}", proxy.url_host)


def writer(engine: AsyncEngine, spool: Path, replica: str = "rep-a", **kw: object) -> SqlLedger:
    return SqlLedger(engine, replica_id=replica, migrate=False, spool_dir=str(spool), spool_deadline_s=0.5,
                     spool_retry_s=0.1, heartbeat_s=0.2, stale_after_s=1.0, lock_wait_s=10, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["cut", "hang"])
async def test_writes_spool_during_an_outage_and_drain_in_order_exactly_once(
        pg_proxy: tuple[CutProxy, str], direct: AsyncEngine, tmp_path: Path, fault: str) -> None:
    proxy, url = pg_proxy
    engine = create_engine(url, pool_size=2)
    w = writer(engine, tmp_path / "spool")
    await w.start()
    try:
        before = entry("before")
        await w.open(before)
        getattr(proxy, fault)()
        opened = [entry(f"during-{i}") for i in range(20)]
        await asyncio.gather(*(w.open(e) for e in opened))  # each returns once durable in the journal
        assert w.spooling and w.pending_rows() >= 20
        await asyncio.gather(*(w.finish(done(e, i), wait=True) for i, e in enumerate(opened)))
        await w.finish(done(before), wait=False)
        await w.finish(done(opened[0], 99), wait=True)  # a second completion: the last one wins
        assert w.pending_rows() >= 42
        assert "during-0" not in await rows(direct)
        proxy.restore()
        await wait_until(lambda: not w.spooling)
        assert w.pending_rows() == 0
        after = entry("after")  # straight to the database again
        await w.open(after)
        await w.finish(done(after), wait=True)
        found = await rows(direct)
    finally:
        await w.stop()
        await engine.dispose()
    assert sorted(found) == sorted(["before", "after", *(e.request_id for e in opened)])  # nothing lost or doubled
    assert all(r.status == "success" for r in found.values())
    assert found["during-0"].output_tokens == 99 and found["during-5"].output_tokens == 5
    assert not list((tmp_path / "spool").glob("*.journal"))


async def test_a_journal_left_by_a_killed_writer_is_replayed_at_start_before_recovery(
        pg_proxy: tuple[CutProxy, str], direct: AsyncEngine, tmp_path: Path) -> None:
    proxy, url = pg_proxy
    engine = create_engine(url, pool_size=2)
    dead = writer(engine, tmp_path / "spool", replica="rep-dead")
    await dead.start()
    finished, cut_short = entry("finished", "rep-dead"), entry("cut-short", "rep-dead")
    await dead.open(finished)
    proxy.cut()
    await dead.open(cut_short)  # journaled; its request then dies with the process
    await dead.finish(done(finished), wait=True)  # journaled
    # kill -9: no stop(), no drain; the process's file lock and database sessions go with it.
    for task in (dead._writer, dead._ticker, dead.spool._drainer):  # type: ignore[union-attr]
        task.cancel()  # type: ignore[union-attr]
    dead.spool.journal.close()  # type: ignore[union-attr]
    await dead.spool.inner.reset()  # type: ignore[union-attr]  # (its sessions were cut already; tidy the client)
    await dead._lock.release()
    await engine.dispose()
    proxy.restore()

    heir = writer(direct, tmp_path / "spool", replica="rep-heir", liveness_lock=False)
    await heir.start()  # replays the orphan journal, then recovers rows of dead replicas
    try:
        found = await rows(direct)
    finally:
        await heir.stop()
    assert found["finished"].status == "success"  # its end was in the journal: not "interrupted"
    assert found["cut-short"].status == "interrupted"  # really died in flight
    assert not list((tmp_path / "spool").glob("*.journal"))


async def test_rows_closed_as_interrupted_while_their_replica_spooled_end_with_their_real_status(
        pg_proxy: tuple[CutProxy, str], direct: AsyncEngine, tmp_path: Path) -> None:
    proxy, url = pg_proxy
    engine = create_engine(url, pool_size=2)
    w = writer(engine, tmp_path / "spool")
    await w.start()
    try:
        e = entry("long")
        await w.open(e)
        proxy.cut()  # its heartbeat and its lock session go; to the others it looks gone
        await w.finish(done(e), wait=True)  # journaled
        await asyncio.sleep(1.2)  # past stale_after_s
        closed = await recover(direct, now(), 1.0)
        assert closed == ["long"]
        found = await restored(proxy, w, direct)
    finally:
        await w.stop()
        await engine.dispose()
    assert found["long"].status == "success" and found["long"].output_tokens == 7


@pytest.mark.parametrize("fault", ["cut", "hang"])
async def test_a_lone_write_its_caller_makes_while_postgresql_is_down_is_journaled_and_the_request_goes_on(
        pg_proxy: tuple[CutProxy, str], direct: AsyncEngine, tmp_path: Path, fault: str) -> None:
    """A lone write goes to the sink from its caller, not the writer task (tests/ledger/test_direct_write.py): the
    spool still takes it when the database cannot, durably, before open() returns."""
    from tests.ledger.test_inline_commit import spy_queue

    proxy, url = pg_proxy
    engine = create_engine(url, pool_size=2)
    w = writer(engine, tmp_path / "spool")
    await w.start()
    queued = spy_queue(w)
    try:
        warm = entry("warm")
        await w.open(warm)
        await w.finish(done(warm), wait=True)
        assert w.direct_commits == 2
        getattr(proxy, fault)()
        e = entry("lone")
        await w.open(e)  # returns: the row is in the journal
        assert w.spooling and w.pending_rows() == 1 and w.direct_commits == 2
        assert [kind for kind, _ in (J.decode(p) for p, _ in w.spool.journal.read(0, 10))] == ["insert"]  # type: ignore[union-attr]
        await w.finish(done(e), wait=True)
        assert w.pending_rows() == 2
        assert [op for op in queued if op.kind != "heartbeat"] == []  # neither write took the queue
        found = await restored(proxy, w, direct)
    finally:
        await w.stop()
        await engine.dispose()
    assert found["lone"].status == "success" and found["warm"].status == "success"


async def test_applying_records_twice_changes_nothing(engine: AsyncEngine) -> None:
    from tests.ledger.conftest import row

    first = row("r1", status="in_flight", finished_at=None)
    last = {**row("r1", tokens=(10, 0, 5)), "status": "success"}
    records = [("insert", first), ("insert", row("r2")), ("update", last)]
    for _ in range(2):  # a crash between the commit and the progress mark replays the batch
        async with engine.begin() as conn:
            await apply_records(conn, records)
    found = await rows(engine)
    assert sorted(found) == ["r1", "r2"]
    assert found["r1"].status == "success" and found["r1"].output_tokens == 5


def test_outages_are_told_apart_from_rows_the_database_refuses() -> None:
    assert is_outage(ConnectionRefusedError()) and is_outage(TimeoutError())
    assert is_outage(sa.exc.OperationalError("x", {}, Exception("server closed the connection")))
    assert not is_outage(sa.exc.IntegrityError("x", {}, Exception("duplicate key")))
    assert not is_outage(ValueError("bad value"))


async def test_journal_records_keep_exact_money(tmp_path: Path) -> None:
    j = J.Journal(tmp_path / "x.journal")
    assert j.open(create=True)
    j.append([J.encode("update", {"total_cost": Decimal("1.000000000000000001")})])
    assert J.decode(j.read(0)[0][0])[1]["total_cost"] == Decimal("1.000000000000000001")
    j.close()
