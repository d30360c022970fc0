"""How a batch of ledger writes reaches the database.

- SQLite (`SqliteSink`): a stdlib `sqlite3` connection (WAL, synchronous=NORMAL: durable across a process crash):
  BEGIN IMMEDIATE, one executemany per statement, COMMIT, on the event loop's thread (a commit is a write into the
  page cache), falling back to a dedicated thread whenever the database is locked by someone else; checkpoints
  (the only fsyncs) run in that thread between batches. Values are stored in exactly the format SQLAlchemy's
  column types use (`sqlite_params`, checked by a parity test), so every reader sees the same rows.
- PostgreSQL (and anything else; `EngineSink`): SQLAlchemy on one dedicated autocommit connection; a batch's
  inserts are one executemany and so are its updates (one round trip each).
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

from gateway.ledger.recovery import heartbeat
from gateway.ledger.tables import Money, UtcDateTime, ledger, money_text

log = logging.getLogger(__name__)

# Columns `finish` may change: the deployment can differ from the one opened (fallback), the rest is the outcome.
UPDATABLE = (
    "route", "provider", "model", "upstream_model", "price_version", "input_tokens", "cached_input_tokens",
    "output_tokens", "currency", "input_cost", "cached_input_cost", "output_cost", "total_cost",
    "reporting_currency", "fx_rate", "input_cost_reporting", "cached_input_cost_reporting",
    "output_cost_reporting", "total_cost_reporting", "baseline_cost", "money_scale", "usage_source", "status",
    "attempts", "latency_ms", "ttft_ms", "error_kind", "finished_at",
)
UPDATE_STATEMENT = (
    ledger.update()
    .where(ledger.c.request_id == sa.bindparam("b_request_id"))
    .values({c: sa.bindparam(f"b_{c}") for c in UPDATABLE})
)


@dataclass(eq=False)
class WriteOp:
    kind: Literal["insert", "update", "heartbeat"]
    values: dict[str, Any]
    future: asyncio.Future[None] | None = None
    tries: int = 0
    counts: bool = True  # a ledger row (not a heartbeat): part of pending_rows()


class Sink:
    async def start(self) -> None:
        return None

    async def write(self, batch: list[WriteOp]) -> int:
        """Make the batch durable; returns the number of commits it took."""
        raise NotImplementedError

    async def after_batch(self) -> None:
        """Maintenance between batches (the batch's callers were already answered)."""
        return None

    async def close(self) -> None:
        return None


def _split(batch: list[WriteOp]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], WriteOp | None]:
    inserts = [op.values for op in batch if op.kind == "insert"]
    updates = [op.values for op in batch if op.kind == "update"]
    beats = [op for op in batch if op.kind == "heartbeat"]
    return inserts, updates, beats[-1] if beats else None


class EngineSink(Sink):
    """SQLAlchemy on one dedicated autocommit connection (PostgreSQL): each executemany is one round trip."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

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
                await conn.execute(ledger.insert(), inserts)
                commits += 1
            if updates:
                await conn.execute(UPDATE_STATEMENT, [{f"b_{k}": v for k, v in u.items()} for u in updates])
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
                 beat: WriteOp | None) -> None:
    if inserts:
        await conn.execute(ledger.insert(), inserts)
    if updates:
        await conn.execute(UPDATE_STATEMENT, [{f"b_{k}": v for k, v in u.items()} for u in updates])
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
_UPDATE_SQL = (f"UPDATE ledger SET {', '.join(f'{c} = ?' for c in UPDATABLE)} WHERE request_id = ?")
_UPDATE_CONV = [(c, _converter(ledger.c[c])) for c in (*UPDATABLE, "request_id")]


def sqlite_params(values: dict[str, Any], conv: list[tuple[str, Callable[[Any], Any] | None]]) -> tuple[Any, ...]:
    compiled = _COMPILED.get(id(conv))
    if compiled is None:
        return tuple(values.get(name) if f is None else f(values.get(name)) for name, f in conv)
    return compiled(values)


def _compile(conv: list[tuple[str, Callable[[Any], Any] | None]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """`sqlite_params` for one fixed column list as one generated function (a tuple display, no generator):
    a third of the cost, and this runs twice per request."""
    env: dict[str, Any] = {}
    items = []
    for i, (name, f) in enumerate(conv):
        if f is None:
            items.append(f"g({name!r})")
        else:
            env[f"f{i}"] = f
            items.append(f"f{i}(g({name!r}))")
    src = "def params(values):\n    g = values.get\n    return (" + ", ".join(items) + ",)\n"
    exec(src, env)  # noqa: S102 - the source is built from the table's own column names
    fn: Callable[[dict[str, Any]], tuple[Any, ...]] = env["params"]
    return fn


_COMPILED = {id(_INSERT_CONV): _compile(_INSERT_CONV), id(_UPDATE_CONV): _compile(_UPDATE_CONV)}


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
      pages (SQLite's own default is 1000) the writer, between two batches, runs a checkpoint in the thread and
      waits for it (as SQLite's automatic checkpoint would have, inside a commit), so the WAL is restarted
      rather than growing under sustained load.
    """

    def __init__(self, database: str, *, inline: bool = True, checkpoint_pages: int = 1000) -> None:
        self._database = database
        self._inline = inline
        self._checkpoint_pages = checkpoint_pages
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._wal_pages = 0  # an estimate of the pages appended to the WAL since the last checkpoint
        self.inline_commits = 0
        self.thread_commits = 0

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._connect)

    def _connect(self) -> None:
        conn = sqlite3.connect(self._database, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a process crash (kill -9)
        if self._inline:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in the thread (after_batch)
            conn.execute("PRAGMA busy_timeout=0")
        else:
            conn.execute("PRAGMA busy_timeout=30000")
        self._conn = conn

    async def write(self, batch: list[WriteOp]) -> int:
        if not self._inline:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._write_sync, batch)
            self.thread_commits += 1
            return 1
        ins, upd, beat = _params(batch)
        try:
            self._commit(ins, upd, beat)
            self.inline_commits += 1
        except sqlite3.OperationalError as e:
            # Primary result code: extended codes (e.g. SQLITE_BUSY_SNAPSHOT) keep it in the low byte.
            if getattr(e, "sqlite_errorcode", 0) & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            # Another process holds the write lock: wait for it off the loop.
            await asyncio.get_running_loop().run_in_executor(self._pool, self._commit_waiting, ins, upd, beat)
            self.thread_commits += 1
        self._wal_pages += 2 * (len(ins) + len(upd)) + 2
        return 1

    async def after_batch(self) -> None:
        if self._inline and self._wal_pages >= self._checkpoint_pages:
            self._wal_pages = 0
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._checkpoint)
            except Exception as e:  # the next one will try again; readers may hold old snapshots meanwhile
                log.warning("ledger WAL checkpoint failed: %s", e)

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database (PASSIVE: never waits for readers)."""
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

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
                if self._inline:
                    with contextlib.suppress(Exception):
                        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self._conn.close()
                self._conn = None

        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._pool, _close)
        self._pool.shutdown(wait=False)


def _params(batch: list[WriteOp]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], WriteOp | None]:
    """The batch as SQLite parameters (converted before taking the write lock: a bad value fails the batch without
    holding up other writers)."""
    inserts, updates, beat = _split(batch)
    return ([sqlite_params(v, _INSERT_CONV) for v in inserts], [sqlite_params(v, _UPDATE_CONV) for v in updates],
            beat)
