"""The ledger's sink for PostgreSQL (and any other SQLAlchemy engine).

PostgreSQL (and anything else; `EngineSink`): one dedicated autocommit connection; a batch's inserts are one
executemany and so are its updates (one round trip each). On PostgreSQL the row writes run as asyncpg prepared
statements that SQLAlchemy compiled once (`_Prepared`): the same SQL and the same stored values (SQLAlchemy's own
bind processors), without SQLAlchemy's per-call work, which cost ~2/3 of the CPU of a request's two writes
(tests/perf/FINDINGS.md, replica path). A lone row (the writer's direct writes) is one prepared `fetch` rather
than an executemany; processors are skipped for the values they return unchanged (`_shortcut`), and an update's
parameters are read straight from the row.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timezone
from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ledger.recovery import heartbeat
from gateway.ledger.sinks import UPDATE_STATEMENT, Sink, WriteOp, _split, _update_binds, insert_ignoring_duplicates
from gateway.ledger.tables import Money, UtcDateTime, ledger

log = logging.getLogger(__name__)


class _Prepared:
    """A statement compiled once by SQLAlchemy for one set of parameter names and prepared on the asyncpg
    connection: its SQL (bind casts included) and each parameter's bind processor, so the stored values are exactly
    those SQLAlchemy would store (tests/ledger/test_sinks.py compares the rows). `order`: (row key, processor) of
    each positional parameter."""

    __slots__ = ("order", "statement")

    def __init__(self, statement: Any, order: list[tuple[str, Callable[[Any], Any] | None]]) -> None:
        self.statement, self.order = statement, order

    @classmethod
    async def build(cls, driver: Any, stmt: Any, dialect: Any, names: tuple[str, ...] | None,
                    key_of: Callable[[str], str] = str) -> _Prepared:
        """`key_of`: the row key each parameter is read from (the parameter's own name by default)."""
        compiled = stmt.compile(dialect=dialect, column_keys=list(names) if names is not None else None)
        processors = compiled._bind_processors  # SQLAlchemy's per-parameter conversions (type decorators, casts)
        order = [(key_of(name), _shortcut(processors.get(name), compiled.binds[name].type))
                 for name in compiled.positiontup or ()]
        return cls(await driver.prepare(str(compiled)), order)

    async def executemany(self, rows: list[dict[str, Any]]) -> None:
        order = self.order
        if len(rows) == 1:  # a lone write: asyncpg's single execute costs less than its executemany machinery
            r = rows[0]
            await self.statement.fetch(*[v if f is None else f(v) for name, f in order for v in (r[name],)])
            return
        await self.statement.executemany([[v if f is None else f(v) for name, f in order for v in (r[name],)]
                                          for r in rows])


_INSERT = ledger.insert()  # built once: an Insert construct costs ~10 us


def _shortcut(processor: Callable[[Any], Any] | None, type_: Any) -> Callable[[Any], Any] | None:
    """`processor`, skipped for the values it returns unchanged: None, a finite non-negative Decimal (Money: validated,
    copied), a UTC datetime (UtcDateTime: `astimezone(utc)` returns it). Up to twelve money columns per completed
    row, each a TypeDecorator call (~1 us); anything else still goes through SQLAlchemy's processor."""
    if processor is None or processor(None) is not None:
        return processor
    if isinstance(type_, Money):
        return lambda v: v if v is None or (type(v) is Decimal and v.is_finite() and not v.is_signed()) else processor(v)
    if isinstance(type_, UtcDateTime):
        return lambda v: v if v is None or v.tzinfo is timezone.utc else processor(v)
    return lambda v: None if v is None else processor(v)


class EngineSink(Sink):
    """One dedicated autocommit connection (PostgreSQL): each executemany is one round trip; on PostgreSQL, row
    writes are asyncpg prepared statements compiled by SQLAlchemy (`_Prepared`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under self._conn
        self._prepared: dict[tuple[str, tuple[str, ...]], _Prepared] = {}
        self._asyncpg = engine.dialect.name == "postgresql"  # rows as asyncpg prepared statements
        # PostgreSQL's writes are awaited round trips: a lone write's caller may make its own (see the writer).
        self.writes_direct = self._asyncpg

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._driver = None
            self._prepared = {}  # prepared statements belong to a connection
        return self._conn

    async def _execute_prepared(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """`rows` (every column of each row) as one pipelined executemany: one round trip, one implicit transaction
        (all rows or none)."""
        try:
            await self._execute_prepared_raw(kind, rows)
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

    async def _execute_prepared_raw(self, kind: str, rows: list[dict[str, Any]]) -> None:
        if self._driver is None:
            conn = await self._connection()
            self._driver = (await conn.get_raw_connection()).driver_connection
        if kind == "update" or len(rows) == 1:  # an update sets the same columns whatever the row holds
            await (await self._statement(kind, () if kind == "update" else tuple(rows[0]))).executemany(rows)
            return
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r), []).append(r)
        if len(groups) > 1:  # inserts of different shapes (not the request path): one transaction for all
            async with self._driver.transaction():
                for names, group in groups.items():
                    await (await self._statement(kind, names)).executemany(group)
            return
        names, group = next(iter(groups.items()))
        await (await self._statement(kind, names)).executemany(group)

    async def _statement(self, kind: str, names: tuple[str, ...]) -> _Prepared:
        key = (kind, names)
        prepared = self._prepared.get(key)
        if prepared is None:
            if kind == "insert":
                prepared = await _Prepared.build(self._driver, _INSERT, self._engine.dialect, names)
            else:  # its parameters are b_<column>: read from the row's <column>
                prepared = await _Prepared.build(self._driver, UPDATE_STATEMENT, self._engine.dialect, None,
                                                 key_of=lambda name: name.removeprefix("b_"))
            self._prepared[key] = prepared
        return prepared

    async def write(self, batch: list[WriteOp]) -> int:
        inserts, updates, beat, uncertain = _split(batch)
        if not self._asyncpg or uncertain or (inserts and updates and _overlap(inserts, updates)):
            # One transaction (SQLite via aiosqlite, in-batch overlap, a write cut short that may have landed).
            async with self._engine.begin() as conn:
                await _write(conn, inserts, updates, beat, uncertain)
            return 1
        try:
            commits = 0
            if inserts:
                await self._execute_prepared("insert", inserts)
                commits += 1
            if updates:
                await self._execute_prepared("update", updates)
                commits += 1
            if beat is not None:
                await heartbeat(await self._connection(), beat.row()["replica_id"], beat.row()["at"])
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


async def _write(conn: AsyncConnection, inserts: list[dict[str, Any]], updates: list[dict[str, Any]],
                 beat: WriteOp | None, ignore_duplicates: bool = False) -> None:
    if inserts:
        stmt = insert_ignoring_duplicates(conn.dialect.name) if ignore_duplicates else ledger.insert()
        await conn.execute(stmt, inserts)
    if updates:
        await conn.execute(UPDATE_STATEMENT, _update_binds(updates))
    if beat is not None:
        await heartbeat(conn, beat.row()["replica_id"], beat.row()["at"])
