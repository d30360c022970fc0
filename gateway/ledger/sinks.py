"""How a batch of ledger writes reaches the database.

- SQLite (`SqliteSink`): a stdlib `sqlite3` connection (WAL, synchronous=NORMAL: durable across a process crash):
  BEGIN IMMEDIATE, one executemany per statement, COMMIT, on the event loop's thread (a commit is a write into the
  page cache), falling back to a dedicated thread whenever the database is locked by someone else; checkpoints
  (the only fsyncs) run in that thread on a connection of their own, concurrently with the commits
  (`gateway/ledger/checkpoint.py`). Values are stored in exactly the format SQLAlchemy's column types use
  (`gateway/ledger/sqlite_rows.py`, checked by a parity test), so every reader sees the same rows. It can also
  commit a lone write synchronously, in the caller's coroutine (`commit_now`; see the writer).
- PostgreSQL (and anything else; `EngineSink`): one dedicated autocommit connection; a batch's inserts are one
  executemany and so are its updates (one round trip each). On PostgreSQL the row writes run as asyncpg prepared
  statements that SQLAlchemy compiled once (`_Prepared`): the same SQL and the same stored values (SQLAlchemy's own
  bind processors), without SQLAlchemy's per-call work, which cost ~2/3 of the CPU of a request's two writes
  (tests/perf/FINDINGS.md, replica path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain import LedgerEntry
from gateway.ledger.checkpoint import WalCheckpointer
from gateway.ledger.recovery import heartbeat
from gateway.ledger.sqlite_rows import (INSERT_CONV, INSERT_SQL, UPDATE_CONV, UPDATE_SQL, insert_row, sqlite_params,
                                         sqlite_time, update_row)
from gateway.ledger.tables import UPDATABLE, entry_values, ledger

__all__ = ["UPDATABLE", "EngineSink", "Sink", "SqliteSink", "WriteOp"]

log = logging.getLogger(__name__)

UPDATE_STATEMENT = (
    ledger.update()
    .where(ledger.c.request_id == sa.bindparam("b_request_id"))
    .values({c: sa.bindparam(f"b_{c}") for c in UPDATABLE})
)


@dataclass(eq=False)
class WriteOp:
    """One write: a ledger row (insert or update) or a heartbeat. A row usually comes as its `entry` and the time
    it is written; each sink turns that into its own parameters (SQLite straight from the entry, SQLAlchemy from
    `row()`), so the request path builds no column dict it does not use."""

    kind: Literal["insert", "update", "heartbeat"]
    values: dict[str, Any] | None = None  # a heartbeat's; a row's columns, given or built by row()
    future: asyncio.Future[None] | None = None
    tries: int = 0
    counts: bool = True  # a ledger row (not a heartbeat): part of pending_rows()
    entry: LedgerEntry | None = None
    at: datetime | None = None

    def row(self) -> dict[str, Any]:
        """Every column of the row (an update's may hold every column: sinks read request_id and UPDATABLE)."""
        if self.values is None:
            if self.entry is None or self.at is None:
                raise ValueError(f"a {self.kind} needs its values or its entry and time")
            self.values = entry_values(self.entry, self.at)
        return self.values

    @property
    def request_id(self) -> str | None:
        if self.entry is not None:
            return self.entry.request_id
        return None if self.values is None else self.values.get("request_id")


class Sink:
    async def start(self) -> None:
        return None

    async def write(self, batch: list[WriteOp]) -> int:
        """Make the batch durable; returns the number of commits it took."""
        raise NotImplementedError

    async def after_batch(self) -> None:
        """Maintenance between batches (the batch's callers were already answered)."""
        return None

    def can_commit_now(self) -> bool:
        """Whether `commit_now` may run right now (synchronously, on the loop's thread)."""
        return False

    def commit_now(self, batch: list[WriteOp]) -> None:
        """Commit `batch` before returning, or raise having committed nothing."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


def _split(batch: list[WriteOp]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], WriteOp | None]:
    inserts = [op.row() for op in batch if op.kind == "insert"]
    updates = [op.row() for op in batch if op.kind == "update"]
    beats = [op for op in batch if op.kind == "heartbeat"]
    return inserts, updates, beats[-1] if beats else None


class _Prepared:
    """A statement compiled once by SQLAlchemy for one set of parameter names and prepared on the asyncpg
    connection: its SQL (bind casts included) and each parameter's bind processor, so the stored values are exactly
    those SQLAlchemy would store (tests/ledger/test_sinks.py compares the rows)."""

    __slots__ = ("order", "statement")

    def __init__(self, statement: Any, order: list[tuple[str, Callable[[Any], Any] | None]]) -> None:
        self.statement, self.order = statement, order

    @classmethod
    async def build(cls, driver: Any, stmt: Any, dialect: Any, names: tuple[str, ...] | None) -> _Prepared:
        compiled = stmt.compile(dialect=dialect, column_keys=list(names) if names is not None else None)
        processors = compiled._bind_processors  # SQLAlchemy's per-parameter conversions (type decorators, casts)
        order = [(name, processors.get(name)) for name in compiled.positiontup or ()]
        return cls(await driver.prepare(str(compiled)), order)

    async def executemany(self, rows: list[dict[str, Any]]) -> None:
        order = self.order
        await self.statement.executemany([[v if f is None else f(v) for name, f in order for v in (r[name],)]
                                          for r in rows])


class EngineSink(Sink):
    """One dedicated autocommit connection (PostgreSQL): each executemany is one round trip; on PostgreSQL, row
    writes are asyncpg prepared statements compiled by SQLAlchemy (`_Prepared`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under self._conn
        self._prepared: dict[tuple[str, tuple[str, ...]], _Prepared] = {}

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._driver = None
            self._prepared = {}  # prepared statements belong to a connection
        return self._conn

    async def _execute_prepared(self, kind: str, stmt: Any, rows: list[dict[str, Any]]) -> None:
        """`rows` (dicts of the statement's parameters) as one pipelined executemany: one round trip, one implicit
        transaction (all rows or none)."""
        try:
            await self._execute_prepared_raw(kind, stmt, rows)
        except Exception as e:
            raise self._translated(e) from e

    def _translated(self, error: Exception) -> Exception:
        """A driver error as SQLAlchemy would have raised it: the writer and the spool tell an outage (spool the row)
        from a refused row (raise) by SQLAlchemy's exception types. Anything else (OSError, timeouts) unchanged."""
        import asyncpg
        from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

        if not isinstance(error, (asyncpg.PostgresError, asyncpg.InterfaceError)):
            return error
        dialect = self._engine.dialect
        dbapi = dialect.loaded_dbapi
        translated: Exception = error
        try:
            AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
        except Exception as t:
            translated = t
        closed = self._driver is None or self._driver.is_closed()
        return sa.exc.DBAPIError.instance(None, None, translated, dbapi.Error, connection_invalidated=closed,
                                          dialect=dialect)

    async def _execute_prepared_raw(self, kind: str, stmt: Any, rows: list[dict[str, Any]]) -> None:
        conn = await self._connection()
        if self._driver is None:
            self._driver = (await conn.get_raw_connection()).driver_connection
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r), []).append(r)
        if len(groups) > 1:  # rows of different shapes (not the request path): one transaction for all
            async with self._driver.transaction():
                for names, group in groups.items():
                    await (await self._statement(kind, stmt, names)).executemany(group)
            return
        names, group = next(iter(groups.items()))
        await (await self._statement(kind, stmt, names)).executemany(group)

    async def _statement(self, kind: str, stmt: Any, names: tuple[str, ...]) -> _Prepared:
        key = (kind, names)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = await _Prepared.build(self._driver, stmt, self._engine.dialect,
                                             names if kind == "insert" else None)
            self._prepared[key] = prepared
        return prepared

    async def write(self, batch: list[WriteOp]) -> int:
        inserts, updates, beat = _split(batch)
        if self._engine.dialect.name != "postgresql" or (inserts and updates and _overlap(inserts, updates)):
            async with self._engine.begin() as conn:  # one transaction (SQLite via aiosqlite, in-batch overlap)
                await _write(conn, inserts, updates, beat)
            return 1
        conn = await self._connection()
        try:
            commits = 0
            if inserts:
                await self._execute_prepared("insert", ledger.insert(), inserts)
                commits += 1
            if updates:
                await self._execute_prepared("update", UPDATE_STATEMENT, _update_binds(updates))
                commits += 1
            if beat is not None:
                await heartbeat(conn, beat.row()["replica_id"], beat.row()["at"])
                commits += 1
            return commits
        except Exception:
            await self._drop()
            raise

    async def reset(self) -> None:
        """Forget the connection (a write on it was cut short: its state is unknown)."""
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._driver, self._prepared = None, {}
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self._driver, self._prepared = None, {}
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _overlap(inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> bool:
    """An update of a row inserted in the same batch must run after it, in one transaction."""
    ids = {v["request_id"] for v in inserts}
    return any(u["request_id"] in ids for u in updates)


_UPDATE_BINDS = [(f"b_{k}", k) for k in ("request_id", *UPDATABLE)]


def _update_binds(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{b: u[k] for b, k in _UPDATE_BINDS} for u in updates]


async def _write(conn: AsyncConnection, inserts: list[dict[str, Any]], updates: list[dict[str, Any]],
                 beat: WriteOp | None) -> None:
    if inserts:
        await conn.execute(ledger.insert(), inserts)
    if updates:
        await conn.execute(UPDATE_STATEMENT, _update_binds(updates))
    if beat is not None:
        await heartbeat(conn, beat.row()["replica_id"], beat.row()["at"])


class SqliteSink(Sink):
    """A stdlib sqlite3 connection (WAL, synchronous=NORMAL) that commits each batch on the event loop's thread
    when it can, and in a dedicated thread when it cannot.

    Why inline: a commit in WAL mode with synchronous=NORMAL is a write into the OS page cache (no fsync), a few
    tens of microseconds for a batch. Handing it to a thread cost more than the commit itself: two wake-ups per
    durable wait (executor queue, then `call_soon_threadsafe` back) and, under load, a GIL tug-of-war in which
    the writer thread reacquired the GIL once per row (sqlite3 releases it around every step). Measured by
    `make bench`: ~150 us of CPU per request at concurrency 1 and ~60 us at 64 went to that thread.

    What would block the loop is kept off it:
    - the write lock held by another process (a second worker, `gateway ledger recover`): the inline attempt uses
      busy_timeout=0, and a batch that finds the database locked is committed in the thread instead, which waits
      for the lock as before (busy_timeout 30 s);
    - checkpoints (they fsync): automatic checkpoints are off on this connection; every `checkpoint_pages` WAL
      pages (SQLite's own default is 1000) a checkpoint runs in the thread on a second connection while commits
      go on, and only a WAL grown past `wal_cap_pages` frames (default 8x) makes the writer wait for one
      (`gateway/ledger/checkpoint.py`).
    """

    def __init__(self, database: str, *, inline: bool = True, checkpoint_pages: int = 1000,
                 wal_cap_pages: int | None = None) -> None:
        self._database = database
        self._inline = inline
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._in_thread = False  # the connection is in the thread's hands (fallback commit): not the loop's
        self.checkpointer = WalCheckpointer(database, self._pool, every_pages=checkpoint_pages,
                                            cap_pages=wal_cap_pages if wal_cap_pages is not None
                                            else 8 * checkpoint_pages)
        self.inline_commits = 0
        self.thread_commits = 0

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._connect)

    def _connect(self) -> None:
        conn = sqlite3.connect(self._database, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a process crash (kill -9)
        if self._inline:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in the thread (checkpoint.py)
            conn.execute("PRAGMA busy_timeout=0")
            # A WAL that grew past the cap (a reader held it) is cut back to it when it next restarts.
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA journal_size_limit={(page + 24) * self.checkpointer.cap_pages + 32}")
            self.checkpointer.open_sync()
        else:
            conn.execute("PRAGMA busy_timeout=30000")
        self._conn = conn

    def can_commit_now(self) -> bool:
        return (self._inline and not self._in_thread and self._conn is not None
                and not self.checkpointer.over_cap)

    def commit_now(self, batch: list[WriteOp]) -> None:
        """Commit on the loop's thread, now (the caller checked `can_commit_now`); a database locked by another
        process raises SQLITE_BUSY at once (busy_timeout=0), having committed nothing."""
        ins, upd, beat = _params(batch)
        self._commit(ins, upd, beat)
        self.inline_commits += 1
        self.checkpointer.wrote(_pages(ins, upd))
        self.checkpointer.maybe_start()

    async def write(self, batch: list[WriteOp]) -> int:
        if not self._inline:
            await self._in_pool(self._write_sync, batch)
            self.thread_commits += 1
            return 1
        ins, upd, beat = _params(batch)
        try:
            self._commit(ins, upd, beat)
            self.inline_commits += 1
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise
            # Another process holds the write lock: wait for it off the loop.
            await self._in_pool(self._commit_waiting, ins, upd, beat)
            self.thread_commits += 1
        self.checkpointer.wrote(_pages(ins, upd))
        return 1

    async def _in_pool(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a commit in the thread; meanwhile the connection is the thread's, not the loop's (no commit_now)."""
        self._in_thread = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._in_thread = False

    async def after_batch(self) -> None:
        if self._inline:
            await self.checkpointer.between_batches()

    def _commit_waiting(self, ins: list[tuple[Any, ...]], upd: list[tuple[Any, ...]], beat: WriteOp | None) -> None:
        conn = self._connection()
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            self._commit(ins, upd, beat)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the SQLite ledger connection is closed")
        return self._conn

    def _write_sync(self, batch: list[WriteOp]) -> None:
        self._commit(*_params(batch))

    def _commit(self, ins: list[tuple[Any, ...]], upd: list[tuple[Any, ...]], beat: WriteOp | None) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if ins:
                conn.executemany(INSERT_SQL, ins)
            if upd:
                conn.executemany(UPDATE_SQL, upd)
            if beat is not None:
                rid, at = beat.row()["replica_id"], sqlite_time(beat.row()["at"])
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
        await self.checkpointer.close()

        def _close() -> None:
            if self._conn is not None:
                if self._inline:
                    with contextlib.suppress(Exception):
                        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self._conn.close()
                self._conn = None

        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._pool, _close)
        self._pool.shutdown(wait=False)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    """The database is locked by another connection (primary result code: extended codes such as
    SQLITE_BUSY_SNAPSHOT keep it in the low byte)."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _pages(ins: list[tuple[Any, ...]], upd: list[tuple[Any, ...]]) -> int:
    """An estimate of the WAL pages a commit appends (table and index leaves per row, plus the header pages)."""
    return 2 * (len(ins) + len(upd)) + 2


def _params(batch: list[WriteOp]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], WriteOp | None]:
    """The batch as SQLite parameters (converted before taking the write lock: a bad value fails the batch without
    holding up other writers)."""
    ins: list[tuple[Any, ...]] = []
    upd: list[tuple[Any, ...]] = []
    beat: WriteOp | None = None
    for op in batch:
        kind, entry, at = op.kind, op.entry, op.at
        if kind == "insert":
            ins.append(insert_row(entry, at) if entry is not None and at is not None and op.values is None
                       else sqlite_params(op.row(), INSERT_CONV))
        elif kind == "update":
            upd.append(update_row(entry, at) if entry is not None and at is not None and op.values is None
                       else sqlite_params(op.row(), UPDATE_CONV))
        else:
            beat = op
    return ins, upd, beat
