"""The SQL ledger (SQLite or PostgreSQL): durable in-flight rows, completed rows, with group commit.

Group commit: every write becomes an operation on one asyncio queue, drained by one background task. The task
takes everything that is waiting (up to `max_batch`), writes it in ONE transaction (inserts first, as one
multi-row statement, then updates as one executemany), and only then resolves the callers' futures. While a
transaction is in progress new operations pile up and form the next batch, so 100 concurrent requests cost a
handful of commits, not 200, and an idle gateway still commits a lone write at once (no linger timer).
A single writer task also means this process is one writer to SQLite, so it never contends with itself.

How a batch reaches the database (`_Sink`), the event loop never blocking on it:
- SQLite (`_SqliteSink`): the whole batch is one call into a dedicated thread that owns a stdlib `sqlite3`
  connection (WAL, synchronous=NORMAL: durable across a process crash): BEGIN IMMEDIATE, one executemany per
  statement, COMMIT. One thread hop per batch instead of one per statement through aiosqlite, and no SQLAlchemy
  compilation or bind processing on the event loop; values are stored in exactly the format SQLAlchemy's column
  types use (`sqlite_params`, checked by a parity test), so every reader sees the same rows.
- PostgreSQL (and anything else; `_EngineSink`): SQLAlchemy on one dedicated autocommit connection. The inserts of
  a batch are one executemany and so are its updates: each is one round trip and atomic on its own (asyncpg sends
  the whole batch with one Sync), so a batch of opens or of finishes costs one round trip, not BEGIN + statements
  + COMMIT, and no pool checkout (nor its pre-ping) per batch.

At start the writer takes its liveness lock (`gateway/ledger/liveness.py`) before it registers or writes anything,
and records it with its heartbeat, so recovery elsewhere knows at once when this process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import db
from gateway.domain import DeploymentKey, LedgerEntry
from gateway.ledger.liveness import ReplicaLock, lock_for, sqlite_database
from gateway.ledger.recovery import PriceLookup, heartbeat, recover
from gateway.ledger.tables import Money, UtcDateTime, cost_columns, ledger, money_text

log = logging.getLogger(__name__)

# Columns `finish` may change: the deployment can differ from the one opened (fallback), the rest is the outcome.
_UPDATABLE = (
    "route", "provider", "model", "upstream_model", "price_version", "input_tokens", "cached_input_tokens",
    "output_tokens", "currency", "input_cost", "cached_input_cost", "output_cost", "total_cost",
    "reporting_currency", "fx_rate", "input_cost_reporting", "cached_input_cost_reporting",
    "output_cost_reporting", "total_cost_reporting", "baseline_cost", "money_scale", "usage_source", "status",
    "attempts", "latency_ms", "ttft_ms", "error_kind", "finished_at",
)
_UPDATE = (
    ledger.update()
    .where(ledger.c.request_id == sa.bindparam("b_request_id"))
    .values({c: sa.bindparam(f"b_{c}") for c in _UPDATABLE})
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def entry_values(entry: LedgerEntry, now: datetime) -> dict[str, Any]:
    """Every column of the row `entry` describes (a pure function)."""
    usage = entry.usage
    return {
        "request_id": entry.request_id, "started_at": entry.started_at,
        "finished_at": None if entry.status == "in_flight" else now,
        "replica_id": entry.replica_id, "team": entry.team, "key_id": entry.key_id, "route": entry.route,
        "provider": entry.provider, "model": entry.model, "upstream_model": entry.upstream_model,
        "price_version": entry.price_version, "stream": entry.stream,
        "prompt_tokens_estimate": entry.prompt_tokens_estimate,
        "input_tokens": usage.input_tokens if usage else 0,
        "cached_input_tokens": usage.cached_input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "usage_source": usage.source if usage else None,
        "status": entry.status, "attempts": entry.attempts, "latency_ms": entry.latency_ms,
        "ttft_ms": entry.ttft_ms, "error_kind": entry.error_kind,
        **cost_columns(entry.cost, entry.baseline_cost),
    }


@dataclass(eq=False)
class _Op:
    kind: Literal["insert", "update", "heartbeat"]
    values: dict[str, Any]
    future: asyncio.Future[None] | None = None
    tries: int = 0
    counts: bool = True  # a ledger row (not a heartbeat): part of pending_rows()


_STOP = object()


class SqlLedger:
    """The `Ledger` of the request path, on the async engine the caller owns (stop() does not dispose it)."""

    def __init__(self, engine: AsyncEngine, *, replica_id: str, stale_after_s: float = 90.0,
                 heartbeat_s: float = 5.0, recover_every_s: float = 60.0, price_lookup: PriceLookup | None = None,
                 baseline: DeploymentKey | None = None, migrate: bool = True, max_batch: int = 1000,
                 retry_s: float = 1.0, max_tries: int = 5, clock: Callable[[], datetime] = utc_now,
                 liveness_lock: bool = True, lock_wait_s: float = 5.0, fast_sqlite: bool = True) -> None:
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
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self._lock: ReplicaLock = lock_for(engine, replica_id, wait_s=lock_wait_s) if liveness_lock else ReplicaLock()
        database = sqlite_database(engine) if fast_sqlite else None
        self._sink: _Sink = _SqliteSink(database) if database is not None else _EngineSink(engine)
        self.transactions = 0  # committed write batches (tests and benchmarks read it)

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._migrate:
            await db.upgrade(self._engine)
        # The lock first: from here on, anyone can see this process is alive (and it refuses to start if another
        # live process holds our replica id, whose rows `include_own` would otherwise close).
        await self._lock.acquire()
        try:
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
            self._queue.put_nowait(_STOP)
            await self._writer
        await self._sink.close()
        with contextlib.suppress(Exception):  # best effort: without it the heartbeat simply goes stale
            async with self._engine.begin() as conn:
                await heartbeat(conn, self.replica_id, self._clock(), stopping=True)
        await self._lock.release()  # after `stopped_at`: a prober never sees us unlocked yet unstopped and alive

    async def recover(self, *, include_own: bool = False) -> list[str]:
        return await recover(self._engine, self._clock(), self._stale_after_s, price_lookup=self._price_lookup,
                             baseline=self._baseline, own_replica=self.replica_id if include_own else None)

    # ------------------------------------------------------------------------------------- the Ledger API
    async def open(self, entry: LedgerEntry) -> None:
        values = entry_values(entry, self._clock())
        # The row names the process that heartbeats for it, whatever the entry says: a mismatch would let
        # recovery take a live request for an orphan.
        values["replica_id"] = self.replica_id
        await self._submit("insert", values, wait=True)

    async def finish(self, entry: LedgerEntry, *, wait: bool) -> None:
        """Complete the row. An entry still `in_flight` updates it in place (deployment after a fallback,
        output counted so far), which recovery then bills if this process dies."""
        values = entry_values(entry, self._clock())
        await self._submit("update", {k: values[k] for k in ("request_id", *_UPDATABLE)}, wait=wait)

    def pending_rows(self) -> int:
        return self._pending

    # ---------------------------------------------------------------------------------------- group commit
    async def _submit(self, kind: Literal["insert", "update"], values: dict[str, Any], *, wait: bool) -> None:
        if self._closed or self._writer is None:
            raise RuntimeError("the ledger is not running (start() not called, or stopped)")
        fut: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if wait else None
        self._pending += 1
        self._queue.put_nowait(_Op(kind, values, fut))
        if fut is not None:
            # Shielded: a caller cancelled (client gone) must not cancel the write, which is already queued.
            await asyncio.shield(fut)

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            batch: list[_Op] = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is _STOP:
                    stopping = True  # flush what came before the stop, then end
                    break
                batch.append(nxt)
            await self._commit(batch)

    async def _commit(self, batch: list[_Op]) -> None:
        try:
            self.transactions += await self._sink.write(batch)
            self._resolve(batch, None)
        except Exception as batch_error:
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

    def _resolve(self, ops: list[_Op], error: BaseException | None) -> None:
        for op in ops:
            if op.counts:
                self._pending -= 1
            if op.future is not None and not op.future.done():
                if error is None:
                    op.future.set_result(None)
                else:
                    op.future.set_exception(error)

    def _failed(self, op: _Op, error: Exception) -> None:
        op.tries += 1
        if op.future is None and op.kind != "heartbeat" and op.tries < self._max_tries and not self._closed:
            # Nobody waits for this write (a streamed response already ended): keep it rather than lose a bill.
            log.warning("ledger write failed (%s), retrying in %.1fs: %s", op.kind, self._retry_s, error)
            asyncio.get_running_loop().call_later(self._retry_s, self._queue.put_nowait, op)
            return
        log.error("ledger write failed for good (%s %s): %s", op.kind, op.values.get("request_id"), error)
        self._resolve([op], error)

    async def _tick_loop(self) -> None:
        since_recovery = 0.0
        while True:
            await asyncio.sleep(self._heartbeat_s)
            # Through the queue: the heartbeat rides along with a batch instead of competing with it.
            self._queue.put_nowait(_Op("heartbeat", {"replica_id": self.replica_id, "at": self._clock()},
                                       counts=False))
            try:
                await self._lock.check()
            except Exception:
                log.exception("checking the ledger liveness lock failed")
            since_recovery += self._heartbeat_s
            if since_recovery >= self._recover_every_s:
                since_recovery = 0.0
                try:  # other replicas may have died while we run
                    await self.recover()
                except Exception:
                    log.exception("periodic ledger recovery failed")


# ------------------------------------------------------------------------------------------------- sinks
class _Sink:
    async def start(self) -> None:
        return None

    async def write(self, batch: list[_Op]) -> int:
        """Make the batch durable; returns the number of commits it took."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


def _split(batch: list[_Op]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], _Op | None]:
    inserts = [op.values for op in batch if op.kind == "insert"]
    updates = [op.values for op in batch if op.kind == "update"]
    beats = [op for op in batch if op.kind == "heartbeat"]
    return inserts, updates, beats[-1] if beats else None


class _EngineSink(_Sink):
    """SQLAlchemy on one dedicated autocommit connection (PostgreSQL): each executemany is one round trip."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    async def write(self, batch: list[_Op]) -> int:
        inserts, updates, beat = _split(batch)
        if self._engine.dialect.name != "postgresql" or (inserts and updates and _overlap(inserts, updates)):
            async with self._engine.begin() as conn:  # one transaction (SQLite via aiosqlite, in-batch overlap)
                await _write(conn, inserts, updates, beat)
            return 1
        conn = await self._connection()
        try:
            commits = 0
            if inserts:
                await conn.execute(ledger.insert(), inserts)
                commits += 1
            if updates:
                await conn.execute(_UPDATE, [{f"b_{k}": v for k, v in u.items()} for u in updates])
                commits += 1
            if beat is not None:
                await heartbeat(conn, beat.values["replica_id"], beat.values["at"])
                commits += 1
            return commits
        except Exception:
            await self._drop()
            raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _overlap(inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> bool:
    """An update of a row inserted in the same batch must run after it, in one transaction."""
    ids = {v["request_id"] for v in inserts}
    return any(u["request_id"] in ids for u in updates)


async def _write(conn: AsyncConnection, inserts: list[dict[str, Any]], updates: list[dict[str, Any]],
                 beat: _Op | None) -> None:
    if inserts:
        await conn.execute(ledger.insert(), inserts)
    if updates:
        await conn.execute(_UPDATE, [{f"b_{k}": v for k, v in u.items()} for u in updates])
    if beat is not None:
        await heartbeat(conn, beat.values["replica_id"], beat.values["at"])


# SQLite storage formats, the same as SQLAlchemy's types produce (tests/ledger/test_writer.py checks parity).
def _sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"ledger times must be timezone-aware datetimes, got {value!r}")
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_money(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"money must be Decimal, got {type(value).__name__}")
    return money_text(Decimal(value))


def _converter(column: sa.Column[Any]) -> Callable[[Any], Any] | None:
    if isinstance(column.type, Money):
        return _sqlite_money
    if isinstance(column.type, UtcDateTime):
        return _sqlite_time
    if isinstance(column.type, sa.Boolean):
        return lambda v: None if v is None else int(bool(v))
    return None


_INSERT_COLUMNS = [c for c in ledger.columns if c.name != "id"]
_INSERT_SQL = (f"INSERT INTO ledger ({', '.join(c.name for c in _INSERT_COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})")
_INSERT_CONV = [(c.name, _converter(c)) for c in _INSERT_COLUMNS]
_UPDATE_SQL = (f"UPDATE ledger SET {', '.join(f'{c} = ?' for c in _UPDATABLE)} WHERE request_id = ?")
_UPDATE_CONV = [(c, _converter(ledger.c[c])) for c in (*_UPDATABLE, "request_id")]


def sqlite_params(values: dict[str, Any], conv: list[tuple[str, Callable[[Any], Any] | None]]) -> tuple[Any, ...]:
    return tuple(values.get(name) if f is None else f(values.get(name)) for name, f in conv)


class _SqliteSink(_Sink):
    """Each batch is one call into a dedicated thread holding a stdlib sqlite3 connection."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._connect)

    def _connect(self) -> None:
        conn = sqlite3.connect(self._database, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a process crash (kill -9)
        conn.execute("PRAGMA busy_timeout=30000")
        self._conn = conn

    async def write(self, batch: list[_Op]) -> int:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write_sync, batch)
        return 1

    def _write_sync(self, batch: list[_Op]) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the SQLite ledger connection is closed")
        inserts, updates, beat = _split(batch)
        # Convert before taking the write lock: a bad value fails the batch without holding up other writers.
        ins = [sqlite_params(v, _INSERT_CONV) for v in inserts]
        upd = [sqlite_params(v, _UPDATE_CONV) for v in updates]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if ins:
                conn.executemany(_INSERT_SQL, ins)
            if upd:
                conn.executemany(_UPDATE_SQL, upd)
            if beat is not None:
                rid, at = beat.values["replica_id"], _sqlite_time(beat.values["at"])
                if conn.execute("UPDATE ledger_replicas SET heartbeat_at = ? WHERE replica_id = ?",
                                (at, rid)).rowcount == 0:
                    conn.execute("INSERT INTO ledger_replicas (replica_id, started_at, heartbeat_at) "
                                 "VALUES (?, ?, ?)", (rid, at, at))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._pool, _close)
        self._pool.shutdown(wait=False)
