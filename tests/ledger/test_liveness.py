"""Liveness locks: a replica whose lock is held is alive whatever its heartbeat says; once its process dies, its
in-flight rows are recovered at once, long before its heartbeat would go stale. Both backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain import LedgerEntry
from gateway.ledger import liveness
from gateway.ledger.liveness import LockUnavailable
from gateway.ledger.recovery import heartbeat, recover
from gateway.ledger.tables import ledger, replicas
from gateway.ledger.writer import SqlLedger
from tests.ledger.test_recovery import VERSION, in_flight, statuses
from tests.ledger.conftest import insert_rows

REPO = Path(__file__).resolve().parents[2]
STALE = 90.0

# A ledger writer in another process: opens one row, says so, then lives until killed. Its clock is an hour
# behind, so by the heartbeat rule it looks long dead: only its lock says otherwise.
HOLDER = textwrap.dedent("""
    import asyncio, sys
    from datetime import datetime, timedelta, timezone
    from gateway.db import create_engine
    from gateway.domain import LedgerEntry
    from gateway.ledger.writer import SqlLedger

    async def main(url, replica):
        engine = create_engine(url)
        past = datetime.now(timezone.utc) - timedelta(hours=1)
        writer = SqlLedger(engine, replica_id=replica, migrate=False, stale_after_s=90, clock=lambda: past)
        await writer.start()
        await writer.open(LedgerEntry("held-1", past, "t", None, "auto", "volcengine", "doubao-pro-32k",
                                      "doubao-pro-32k", 1, replica, 1000, True))
        print("ready", writer._lock.marker, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def start_holder(url: str, replica: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, replica], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), f"holder failed: {line!r}"
    return proc


async def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)


async def test_live_lock_holder_is_never_recovered_and_is_recovered_at_once_when_dead(
        engine: AsyncEngine, ledger_url: str) -> None:
    proc = start_holder(ledger_url, "other-proc")
    try:
        async with engine.connect() as conn:
            marker = (await conn.execute(sa.select(replicas.c.liveness)
                                         .where(replicas.c.replica_id == "other-proc"))).scalar()
        assert marker and marker.startswith("pg-advisory:" if "postgresql" in ledger_url else "flock:")
        # Its heartbeat is an hour old: stale by far, yet its lock is held, so nothing is closed, whether by a
        # plain recovery (`gateway ledger recover`) or by a writer starting up.
        now = datetime.now(timezone.utc)
        assert await recover(engine, now, STALE) == []
        starting = SqlLedger(engine, replica_id="newcomer", migrate=False, stale_after_s=STALE)
        await starting.start()
        await starting.stop()
        assert (await statuses(engine))["held-1"] == "in_flight"
        # The fallback is still there: without locks the heartbeat rule alone would have closed it.
        assert proc.poll() is None
    finally:
        await kill9(proc)
    # Dead now. Its heartbeat is taken as fresh (a clock an hour behind the row), so only the lock can tell.
    assert await recover(engine, datetime.now(timezone.utc) - timedelta(hours=1), STALE,
                         price_lookup={1: VERSION}.get) == ["held-1"]
    async with engine.connect() as conn:
        r = (await conn.execute(sa.select(ledger).where(ledger.c.request_id == "held-1"))).one()
    assert (r.status, r.usage_source, r.input_tokens, r.error_kind) == ("interrupted", "estimated", 1000,
                                                                       "replica_gone")
    assert r.total_cost == r.input_cost == 1000 * VERSION.prices[("volcengine", "doubao-pro-32k")].input / 1000
    if "sqlite" in ledger_url:  # the dead replica's lock file is cleaned up by the recovery that found it free
        assert not list(Path(ledger_url.removeprefix("sqlite:///") + ".replicas").glob("other-proc*"))


async def test_a_second_process_with_the_same_replica_id_refuses_to_start(engine: AsyncEngine,
                                                                          ledger_url: str) -> None:
    proc = start_holder(ledger_url, "twin")
    try:
        twin = SqlLedger(engine, replica_id="twin", migrate=False, stale_after_s=STALE, lock_wait_s=0.2)
        with pytest.raises(LockUnavailable):
            await twin.start()  # it would otherwise close its live twin's rows as its own "predecessor's"
        assert (await statuses(engine))["held-1"] == "in_flight"
    finally:
        await kill9(proc)
    again = SqlLedger(engine, replica_id="twin", migrate=False, stale_after_s=STALE, lock_wait_s=0.2)
    await again.start()  # the twin is gone: its lock is ours, and its row is recovered
    await again.stop()
    assert (await statuses(engine))["held-1"] == "interrupted"


async def test_graceful_stop_releases_the_lock_and_marks_the_replica_stopped(engine: AsyncEngine,
                                                                           ledger_url: str) -> None:
    w = SqlLedger(engine, replica_id="polite", migrate=False, stale_after_s=STALE)
    await w.start()
    marker = w._lock.marker
    assert marker is not None
    await w.open(LedgerEntry("p1", datetime.now(timezone.utc), "t", None, "auto", "volcengine", "doubao-pro-32k",
                             "doubao-pro-32k", 1, "polite", 10, True))
    async with engine.begin() as conn:  # a live, locked replica: recovery sees it held
        assert (await liveness.probe(conn, {"polite": marker})).held == {"polite": True}
    await w.stop()
    assert await recover(engine, datetime.now(timezone.utc), STALE) == ["p1"]
    if "sqlite" in ledger_url:
        assert not Path(marker.split(":", 2)[2]).exists()


async def test_markers_this_host_cannot_test_fall_back_to_heartbeats(engine: AsyncEngine) -> None:
    now = datetime.now(timezone.utc)
    async with engine.begin() as conn:
        # A replica on another kernel (its flock proves nothing here), one whose lock file is gone, and a
        # pre-liveness replica: all decided by their (fresh) heartbeats, so none is closed.
        await heartbeat(conn, "elsewhere", now, starting=True, liveness="flock:other-boot-id:/tmp/x.lock")
        await heartbeat(conn, "no-file", now, starting=True,
                        liveness=f"flock:{liveness.boot_id()}:/nonexistent/dir/r.lock")
        await heartbeat(conn, "old", now, starting=True)
    await insert_rows(engine, [in_flight("e1", "elsewhere"), in_flight("n1", "no-file"), in_flight("o1", "old")])
    assert await recover(engine, now, STALE) == []
    assert sorted(await recover(engine, now + timedelta(seconds=STALE + 1), STALE)) == ["e1", "n1", "o1"]


def test_file_lock_is_exclusive_between_open_files(tmp_path: Path) -> None:
    async def run() -> None:
        a = liveness.FileLock(str(tmp_path / "l.db"), "r1", wait_s=0.1)
        await a.acquire()
        assert a.marker is not None and a.path.exists()
        b = liveness.FileLock(str(tmp_path / "l.db"), "r1", wait_s=0.1)
        with pytest.raises(LockUnavailable):
            await b.acquire()
        await a.release()
        assert not a.path.exists()
        await b.acquire()
        await b.release()

    asyncio.run(run())
