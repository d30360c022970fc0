"""The SQL ledger (SQLite or PostgreSQL): durable in-flight rows, completed rows, with group commit.

Group commit: every write becomes an operation on one asyncio queue, drained by one background task. The task
takes everything that is waiting (up to `max_batch`), writes it in ONE transaction (inserts first, as one
multi-row statement, then updates as one executemany), and only then resolves the callers' futures. While a
transaction is in progress new operations pile up and form the next batch, so 100 concurrent requests cost a
handful of commits, not 200, and an idle gateway still commits a lone write at once (no linger timer).
A single writer task also means this process is one writer to SQLite, so it never contends with itself.

A lone write skips all that. Group commit only pays when there are siblings to share a commit with (PostgreSQL's
commit_delay/commit_siblings follows the same rule). When no other request of this process has a row open, the
queue is empty and the sink can commit synchronously (SQLite, inline, not busy in its thread), the caller commits
its one op itself, without yielding: no queue, no future, no writer-task hop. A request always awaits its vendor
between opening and finishing its row, so concurrent requests see each other's open rows and share commits.
Anything else, including an inline commit that fails (say, the database is locked by another process), takes the
queue, which owns retries, the thread fallback and error reporting. Ordering holds: an empty queue and an idle sink
mean every earlier write is committed.

PostgreSQL cannot commit synchronously, but a lone write's caller awaits the sink itself (`_write_direct`), holding
the sink lock the writer task holds around each batch, so the two never share the connection; the lock is free and
the queue empty, so every earlier write is committed. That saves the queue, the future and the writer task's
wake-up (tests/perf/FINDINGS.md, replica path). Right after the writer task committed a batch of several writes, a
lone write takes the queue all the same: requests are arriving together, and the others of its wave would otherwise
wait for its round trip before sharing a commit (one batch of one later, lone writes go direct again). The writer
takes the lock before it forms a batch, so what queues behind a direct write commits together. A direct write whose
caller is cancelled mid-way may or may not have committed: it goes to the queue as `uncertain` (an insert that
ignores its own earlier copy; an update is idempotent) on a fresh connection, so the write still happens, once,
before anything its request writes next.

How a batch reaches the database is `gateway/ledger/sinks.py`.

At start the writer takes its liveness lock (`gateway/ledger/liveness.py`) before it registers or writes anything,
and records it with its heartbeat, so recovery elsewhere knows at once when this process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime, timezone
from dataclasses import replace
from typing import Any, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import db
from gateway.domain import DeploymentKey, LedgerEntry
from gateway.errors import StateUnavailable
from gateway.ledger.liveness import ReplicaLock, lock_for, sqlite_database
from gateway.ledger.recovery import PriceLookup, heartbeat, recover
from gateway.ledger.engine_sink import EngineSink
from gateway.ledger.sinks import Sink, WriteOp
from gateway.ledger.sqlite_sink import SqliteSink
from gateway.ledger.spool import SpoolingSink

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


_STOP = object()


class SqlLedger:
    """The `Ledger` of the request path, on the async engine the caller owns (stop() does not dispose it)."""

    def __init__(self, engine: AsyncEngine, *, replica_id: str, stale_after_s: float = 90.0,
                 heartbeat_s: float = 5.0, recover_every_s: float = 60.0, price_lookup: PriceLookup | None = None,
                 baseline: DeploymentKey | None = None, migrate: bool = True, max_batch: int = 1000,
                 retry_s: float = 1.0, max_tries: int = 5, clock: Callable[[], datetime] = utc_now,
                 liveness_lock: bool = True, lock_wait_s: float = 5.0, fast_sqlite: bool = True,
                 spool_dir: str | None = None, spool_deadline_s: float = 2.0, spool_retry_s: float = 1.0) -> None:
        if heartbeat_s * 3 > stale_after_s:
            raise ValueError("stale_after_s must be several heartbeats long, or live replicas look dead")
        self._engine = engine
        self.replica_id = replica_id
        self._stale_after_s = stale_after_s
        self._heartbeat_s = heartbeat_s
        self._recover_every_s = recover_every_s
        self._price_lookup = price_lookup
        self._baseline = baseline
        self._migrate = migrate
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._max_tries = max_tries
        self._clock = clock
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending = 0
        # Request ids of rows opened and not yet finished (the "siblings" a write could share a commit with).
        self._open_rows: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        # Held by whoever uses the sink: the writer task around a batch, a caller around its direct write.
        self._sink_lock = asyncio.Lock()
        self._reset_due = False  # a direct write was cut short: the sink's connection is in an unknown state
        # The writer task's last batch held several writes: requests are arriving together, and a lone write now
        # is likely the first of a wave whose others would wait for its round trip (group commit does better).
        self._busy = False
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self._lock: ReplicaLock = lock_for(engine, replica_id, wait_s=lock_wait_s) if liveness_lock else ReplicaLock()
        database = sqlite_database(engine) if fast_sqlite else None
        inner: Sink = SqliteSink(database) if database is not None else EngineSink(engine)
        # With a spool directory, writes the database cannot take go to a local journal (gateway/ledger/spool.py).
        # A local SQLite file has no network to wait on (and its thread commit cannot be cut short), so only its
        # errors spool it, never a deadline.
        self.spool: SpoolingSink | None = None
        if spool_dir is not None:
            self.spool = SpoolingSink(inner, engine, spool_dir, replica_id, clock=clock, retry_s=spool_retry_s,
                                      deadline_s=None if database is not None else spool_deadline_s)
        self._sink: Sink = self.spool if self.spool is not None else inner
        self.transactions = 0  # committed write batches (tests and benchmarks read it)
        self.direct_commits = 0  # of which lone writes committed by their caller, without the queue

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._migrate:
            await db.upgrade(self._engine)
        # The lock first: from here on, anyone can see this process is alive (and it refuses to start if another
        # live process holds our replica id, whose rows `include_own` would otherwise close).
        await self._lock.acquire()
        try:
            # Journals of dead writers first: rows whose end they hold are then not taken for interrupted.
            if self.spool is not None:
                await self.spool.replay_orphans()
            # Before our first heartbeat and write, rows under our own id can only be a dead predecessor's.
            await self.recover(include_own=True)
            async with self._engine.begin() as conn:
                await heartbeat(conn, self.replica_id, self._clock(), starting=True, liveness=self._lock.marker)
            await self._sink.start()
        except BaseException:
            await self._lock.release()
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="ledger-writer")
        self._ticker = asyncio.create_task(self._tick_loop(), name="ledger-heartbeat")

    async def stop(self) -> None:
        """Flush everything accepted, then mark this replica stopped (its leftovers become recoverable at once)."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._writer is not None:
            async with self._sink_lock:  # after a direct write in progress (cut short, it hands its op to the queue)
                self._queue.put_nowait(_STOP)
            await self._writer
        await self._sink.close()
        # Both bounded: a database that stopped answering must not hold up the process's exit.
        with contextlib.suppress(Exception):  # best effort: without it the heartbeat simply goes stale
            async with asyncio.timeout(5.0):
                async with self._engine.begin() as conn:
                    await heartbeat(conn, self.replica_id, self._clock(), stopping=True)
        try:
            async with asyncio.timeout(5.0):
                await self._lock.release()  # after `stopped_at`: a prober never sees us unlocked yet alive
        except Exception as e:
            log.warning("releasing the ledger liveness lock failed (%s); it goes with the process",
                        type(e).__name__)

    async def recover(self, *, include_own: bool = False) -> list[str]:
        return await recover(self._engine, self._clock(), self._stale_after_s, price_lookup=self._price_lookup,
                             baseline=self._baseline, own_replica=self.replica_id if include_own else None)

    # ------------------------------------------------------------------------------------- the Ledger API
    async def open(self, entry: LedgerEntry) -> None:
        # The row names the process that heartbeats for it, whatever the entry says: a mismatch would let
        # recovery take a live request for an orphan.
        if entry.replica_id != self.replica_id:
            entry = replace(entry, replica_id=self.replica_id)
        rows = self._open_rows
        alone = not rows
        rows.add(entry.request_id)
        try:
            await self._submit(WriteOp("insert", entry=entry, at=self._clock()), wait=True, alone=alone)
        except BaseException as e:
            # Failed (or its wait cancelled): its finish may never come, and a stale id would only keep later lone
            # writes on the queue, never make one unsafe.
            rows.discard(entry.request_id)
            if isinstance(e, Exception) and not isinstance(e, RuntimeError):
                # Neither the database nor the journal took the row: nothing may be sent upstream (503).
                raise StateUnavailable("the ledger cannot record requests right now; retry shortly") from e
            raise

    async def finish(self, entry: LedgerEntry, *, wait: bool) -> None:
        """Complete the row. An entry still `in_flight` updates it in place (deployment after a fallback,
        output counted so far), which recovery then bills if this process dies."""
        rows = self._open_rows
        rid = entry.request_id
        if entry.status != "in_flight":
            rows.discard(rid)
            alone = not rows
        else:
            alone = not rows or (len(rows) == 1 and rid in rows)
        await self._submit(WriteOp("update", entry=entry, at=self._clock()), wait=wait, alone=alone)

    def pending_rows(self) -> int:
        """Writes accepted but not yet in the database: queued, or journaled while it was unreachable."""
        return self._pending + (self.spool.pending if self.spool is not None else 0)

    @property
    def spooling(self) -> bool:
        return self.spool is not None and self.spool.spooling

    # ---------------------------------------------------------------------------------------- group commit
    async def _submit(self, op: WriteOp, *, wait: bool, alone: bool = False) -> None:
        if self._closed or self._writer is None:
            raise RuntimeError("the ledger is not running (start() not called, or stopped)")
        # Only a waited write: an unwaited one (a streamed response already ended) costs its caller nothing queued,
        # and stays visible in pending_rows() until the writer commits it.
        if alone and wait and self._queue.empty():
            sink = self._sink
            if sink.can_commit_now():
                if self._commit_alone(op):
                    return
            elif sink.writes_direct and not self._sink_lock.locked() and not self._busy:
                await self._write_direct(op)
                return
        fut: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if wait else None
        op.future = fut
        self._enqueue(op)
        if fut is not None:
            # A caller cancelled here (client gone) cancels only its wait: the write is already queued and happens
            # anyway (_resolve skips a future that is done). No shield needed, and none paid for.
            await fut

    def _enqueue(self, op: WriteOp) -> None:
        self._pending += 1
        self._queue.put_nowait(op)

    def _commit_alone(self, op: WriteOp) -> bool:
        """Commit a lone write in the caller's coroutine, synchronously (nothing can cancel it half-way); False
        (nothing committed) sends it to the queue."""
        try:
            self._sink.commit_now([op])
        except Exception as e:
            # Nothing was committed: the queue decides (thread fallback for a locked database, retries, the error
            # for a waiting caller). A real failure is logged there, once.
            log.debug("inline ledger commit failed, queued instead: %s", e)
            return False
        self.transactions += 1
        self.direct_commits += 1
        return True

    async def _write_direct(self, op: WriteOp) -> None:
        """Write a lone op by its caller (the sink lock free, the queue empty: see the module doc)."""
        self._pending += 1
        try:
            # Free, so taken without yielding; only when the writer task was just handed the lock (it then waits
            # its turn, behind the writer's batch of earlier writes) does this wait.
            async with self._sink_lock:
                commits = await self._sink.write([op])
        except Exception as e:
            # Neither committed nor spooled (the spool takes an outage): as the writer would report it.
            self._pending -= 1
            self._gave_up(op, e)
            raise
        except BaseException:
            # Cancelled (a server shutting down past its grace period), maybe mid-write: the queue finishes it, on a
            # fresh connection.
            self._pending -= 1
            self._reset_due = True
            op.uncertain = True
            self._enqueue(op)
            raise
        self._pending -= 1
        if commits:  # 0: journaled (the database is unreachable)
            self.transactions += commits
            self.direct_commits += 1

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            # The sink first (free unless a direct write holds it): what arrives meanwhile joins this batch, rather
            # than a batch of one waiting for the direct write and the rest waiting for it (tests/perf/FINDINGS.md).
            async with self._sink_lock:
                batch: list[WriteOp] = [first]
                while len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if nxt is _STOP:
                        stopping = True  # flush what came before the stop, then end
                        break
                    batch.append(nxt)
                self._busy = len(batch) > 1
                await self._commit(batch)

    async def _commit(self, batch: list[WriteOp]) -> None:
        """Write `batch`, holding the sink lock."""
        if self._reset_due:
            self._reset_due = False
            with contextlib.suppress(Exception):
                await self._sink.reset()
        try:
            self.transactions += await self._sink.write(batch)
            self._resolve(batch, None)
        except Exception as batch_error:
            await self._commit_one_by_one(batch, batch_error)
        await self._sink.after_batch()

    async def _commit_one_by_one(self, batch: list[WriteOp], batch_error: Exception) -> None:
        if len(batch) == 1:
            self._failed(batch[0], batch_error)
            return
        # One bad row must not fail its neighbours: retry each on its own.
        for op in batch:
            try:
                self.transactions += await self._sink.write([op])
                self._resolve([op], None)
            except Exception as e:
                self._failed(op, e)

    def _resolve(self, ops: list[WriteOp], error: BaseException | None) -> None:
        for op in ops:
            if op.counts:
                self._pending -= 1
            if op.future is not None and not op.future.done():
                if error is None:
                    op.future.set_result(None)
                else:
                    op.future.set_exception(error)

    def _failed(self, op: WriteOp, error: Exception) -> None:
        op.tries += 1
        if op.future is None and op.kind != "heartbeat" and op.tries < self._max_tries and not self._closed:
            # Nobody waits for this write (a streamed response already ended): keep it rather than lose a bill.
            log.warning("ledger write failed (%s), retrying in %.1fs: %s", op.kind, self._retry_s, error)
            asyncio.get_running_loop().call_later(self._retry_s, self._queue.put_nowait, op)
            return
        self._gave_up(op, error)
        self._resolve([op], error)

    def _gave_up(self, op: WriteOp, error: Exception) -> None:
        log.error("ledger write failed for good (%s %s): %s", op.kind, op.request_id, error)

    async def _tick_loop(self) -> None:
        since_recovery = 0.0
        while True:
            await asyncio.sleep(self._heartbeat_s)
            # Through the queue: the heartbeat rides along with a batch instead of competing with it.
            self._queue.put_nowait(WriteOp("heartbeat", {"replica_id": self.replica_id, "at": self._clock()},
                                       counts=False))
            try:
                # Bounded: a database that stopped answering must not stall the heartbeat for good.
                async with asyncio.timeout(self._heartbeat_s):
                    await self._lock.check()
            except Exception as e:
                log.error("checking the ledger liveness lock failed: %s", type(e).__name__)
            since_recovery += self._heartbeat_s
            if since_recovery >= self._recover_every_s and not self.spooling:
                since_recovery = 0.0
                try:  # other replicas may have died while we run
                    async with asyncio.timeout(self._recover_every_s):
                        await self.recover()
                except Exception:
                    log.exception("periodic ledger recovery failed")

    def can_spool(self) -> bool:
        """Whether a write the database cannot take would still be durable (the journal is open or can be)."""
        if self.spool is None:
            return False
        if self.spool.journal.is_open:
            return True
        d = self.spool.spool_dir
        while not d.exists() and d != d.parent:
            d = d.parent
        return d.is_dir() and os.access(d, os.W_OK)


# ------------------------------------------------------------------------------------------------- sinks
