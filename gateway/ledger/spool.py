"""Keeping the ledger writable while its database is not: a sink wrapper that spools to a local journal.

While the database takes writes, `SpoolingSink` is a pass-through: the writer's lone inline commits and its
batches reach the inner sink (`gateway/ledger/sinks.py`) as before, a batch bounded by `deadline_s`. When a batch
fails because the database is unreachable (refused, reset, timed out: `is_outage`), that batch and every write
after it are appended to the journal (`gateway/ledger/journal.py`, fsync'd before the writer answers its callers),
and a background task retries the database every `retry_s`. Everything goes to the journal until it is drained,
so the journal is a FIFO in front of the database and the order of each row's writes is kept.

Draining applies records in journal order, in batches, each in one transaction with this replica's heartbeat:
inserts first as `INSERT ... ON CONFLICT (request_id) DO NOTHING` (a row that reached the database after all, say
a write cut off by the deadline whose commit landed, is not doubled), then updates in order (an update always
follows its row's insert in the journal, so it finds its row). Re-applying a batch (a crash between the commit and
the progress mark) therefore changes nothing. Only once the journal is empty (removed, durably) do writes go
straight to the database again: an older journaled update can never land after a newer direct one.

A record the database refuses for its content (not an outage) would block the journal forever: it is set aside in
`<journal>.rejected` (and logged), and the drain goes on.

Recovery (`gateway/ledger/recovery.py`) and a spooling replica: the replica keeps its liveness lock and heartbeat
where it can, but a long outage can make other replicas see it as gone and close its `in_flight` rows as
`interrupted`. The journaled updates are unconditional, so when they drain each such row ends with the status the
request really had; a journal left by a dead process is replayed by the next writer to start on the same spool
directory *before* it recovers, so only rows whose requests really died become `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ledger import journal as J
from gateway.ledger.recovery import heartbeat
from gateway.ledger.sinks import UPDATE_STATEMENT, Sink, WriteOp, _update_binds, insert_ignoring_duplicates
from gateway.ledger.tables import ledger

log = logging.getLogger(__name__)


def is_outage(error: BaseException) -> bool:
    """Whether `error` means the database cannot be reached (spool), rather than that it refused a row (raise)."""
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, OSError, ConnectionError)):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        # Integrity and data errors are about the row; operational and interface errors about the connection.
        return isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)) or is_outage_cause(error.orig)
    if isinstance(error, sa.exc.InterfaceError | sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    # sqlite3 (the fast SQLite sink) raises its own OperationalError: locked beyond its wait, disk I/O, full.
    import sqlite3

    return isinstance(error, sqlite3.OperationalError)


def is_outage_cause(orig: BaseException | None) -> bool:
    name = type(orig).__name__ if orig is not None else ""
    return orig is not None and ("Connection" in name or "CannotConnectNow" in name or isinstance(orig, OSError))


async def apply_records(conn: AsyncConnection, records: list[tuple[str, dict[str, Any]]]) -> None:
    """Apply journal records idempotently, in one transaction the caller owns (see the module doc)."""
    inserts = [v for k, v in records if k == "insert"]
    updates = [v for k, v in records if k == "update"]
    if inserts:
        await conn.execute(insert_ignoring_duplicates(conn.dialect.name), inserts)
    if updates:
        await conn.execute(UPDATE_STATEMENT, _update_binds(updates))


class SpoolingSink(Sink):
    def __init__(self, inner: Sink, engine: AsyncEngine, spool_dir: str | Path, replica_id: str, *,
                 clock: Callable[[], datetime], deadline_s: float | None = 2.0, retry_s: float = 1.0,
                 drain_batch: int = 500, drain_timeout_s: float = 10.0) -> None:
        self.inner = inner
        self.writes_direct = inner.writes_direct
        self._engine = engine
        self.spool_dir = Path(spool_dir).absolute()
        self._replica_id = replica_id
        self._clock = clock
        self._deadline_s = deadline_s
        self._retry_s = retry_s
        self._drain_batch = drain_batch
        self._drain_timeout_s = drain_timeout_s
        # The database by dialect and name (an SQLite file by its absolute path): not by host and port, which
        # may differ between replicas reaching one database (a pooler, a proxy, a DNS alias).
        database = engine.url.database or ""
        if engine.dialect.name == "sqlite" and database not in ("", ":memory:"):
            database = str(Path(database).absolute())
        self._tag = J.database_tag(f"{engine.dialect.name}:{database}")
        self.journal = J.Journal(self.spool_dir / J.journal_name(replica_id, self._tag))
        self.spooling = False
        self.pending = 0  # journaled writes not yet in the database
        self.spooled_total = 0
        self.drained_total = 0
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.inner.start()

    async def replay_orphans(self) -> int:
        """Drain every journal in the spool directory whose writer is gone (a crash, a restart, a peer that died
        sharing the directory) into the database; at start-up, before recovery. Returns the records applied."""
        total = 0
        for path in J.orphans(self.spool_dir, self._tag, own=self.journal.path):
            orphan = J.Journal(path)
            if not orphan.open(create=False):
                continue  # a live writer holds it
            try:
                n = await self._drain(orphan)
                total += n
                log.warning("replayed %d ledger writes from the journal %s", n, path)
                if orphan.applied >= orphan.size:
                    orphan.remove()
            finally:
                orphan.close()
        return total

    async def close(self) -> None:
        """Stop the drainer; a last drain if the database is back; what remains stays journaled for the next
        start (its file lock goes with this process, so the next writer on this spool directory replays it)."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(BaseException):
                await self._drainer
            self._drainer = None
        if self.spooling:
            try:
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._drain_and_resume()
            except Exception as e:
                log.warning("the ledger database is still unavailable at shutdown; %d writes stay in %s (%s)",
                            self.pending, self.journal.path, type(e).__name__)
        self.journal.close()
        await self.inner.close()

    # ------------------------------------------------------------------------------------- the Sink API
    def can_commit_now(self) -> bool:
        return not self.spooling and self.inner.can_commit_now()

    def commit_now(self, batch: list[WriteOp]) -> None:
        self.inner.commit_now(batch)

    async def reset(self) -> None:
        await self._reset_inner()

    async def after_batch(self) -> None:
        if not self.spooling:
            await self.inner.after_batch()

    async def write(self, batch: list[WriteOp]) -> int:
        if not self.spooling:
            try:
                if self._deadline_s is None:
                    return await self.inner.write(batch)
                async with asyncio.timeout(self._deadline_s):
                    return await self.inner.write(batch)
            except Exception as e:
                if not is_outage(e):
                    raise
                log.error("the ledger database cannot take writes (%s); spooling to %s", type(e).__name__,
                          self.journal.path)
                await self._reset_inner()
                self._begin_spooling()
        self._append(batch)
        return 0

    # --------------------------------------------------------------------------------------------- spooling
    def _begin_spooling(self) -> None:
        if not self.journal.is_open:
            self.journal.open(create=True)
        self.spooling = True
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain_loop(), name="ledger-spool-drain")

    def _append(self, batch: list[WriteOp]) -> None:
        # Heartbeats are not journaled: the drain heartbeats itself when the database is back.
        payloads = [J.encode(op.kind, op.row()) for op in batch if op.kind != "heartbeat"]
        if not payloads:
            return
        self.journal.append(payloads)
        self.pending += len(payloads)
        self.spooled_total += len(payloads)
        self._wake.set()

    async def _reset_inner(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if reset is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await reset()

    async def _drain_loop(self) -> None:
        while self.spooling:
            await asyncio.sleep(self._retry_s)
            try:
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._drain_and_resume()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("ledger database still unavailable (%s); %d writes spooled", type(e).__name__,
                            self.pending)

    async def _drain_and_resume(self) -> None:
        applied = await self._drain(self.journal)
        self.pending = max(0, self.pending - applied)
        # Nothing awaits between this check and the switch: no write can slip in between.
        if self.journal.applied >= self.journal.size:
            self.journal.remove()
            self.pending = 0
            self.spooling = False
            log.warning("the ledger database is back; the journal is drained (%d writes)", self.drained_total)

    async def _drain(self, journal: J.Journal) -> int:
        """Apply `journal` from its progress mark to its current end, batch by batch; returns records applied."""
        applied = 0
        while True:
            chunk = journal.read(journal.applied, self._drain_batch)
            if not chunk:
                return applied
            records = [J.decode(p) for p, _ in chunk]
            try:
                async with self._engine.begin() as conn:
                    await heartbeat(conn, self._replica_id, self._clock())
                    await apply_records(conn, records)
            except Exception as e:
                if is_outage(e):
                    raise
                await self._apply_one_by_one(journal, chunk)
            journal.mark_applied(chunk[-1][1])
            applied += len(chunk)
            self.drained_total += len(chunk)

    async def _apply_one_by_one(self, journal: J.Journal, chunk: list[tuple[bytes, int]]) -> None:
        for payload, _ in chunk:
            try:
                async with self._engine.begin() as conn:
                    await apply_records(conn, [J.decode(payload)])
            except Exception as e:
                if is_outage(e):
                    raise
                log.error("the ledger refused a journaled write (%s); set aside in %s.rejected", type(e).__name__,
                          journal.path)  # not the error's text: SQLAlchemy's carries the row's values
                with open(str(journal.path) + ".rejected", "ab") as f:
                    f.write(J.frame(payload))
                    f.flush()
