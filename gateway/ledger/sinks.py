"""How a batch of ledger writes reaches the database, the event loop never blocking on it.

- SQLite (`SqliteSink`): the whole batch is one call into a dedicated thread that owns a stdlib `sqlite3`
  connection (WAL, synchronous=NORMAL: durable across a process crash): BEGIN IMMEDIATE, one executemany per
  statement, COMMIT. Values are stored in exactly the format SQLAlchemy's column types use (`sqlite_params`,
  checked by a parity test), so every reader sees the same rows.
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
    return tuple(values.get(name) if f is None else f(values.get(name)) for name, f in conv)


class SqliteSink(Sink):
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

    async def write(self, batch: list[WriteOp]) -> int:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write_sync, batch)
        return 1

    def _write_sync(self, batch: list[WriteOp]) -> None:
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
