"""How a batch of ledger writes reaches the database: the `Sink` interface and the `WriteOp` it takes.

The sinks: `SqliteSink` (gateway/ledger/sqlite_sink.py) for the embedded SQLite ledger, `EngineSink`
(gateway/ledger/engine_sink.py) for PostgreSQL and any other SQLAlchemy engine; `SpoolingSink`
(gateway/ledger/spool.py) wraps either while the database is unreachable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from gateway.domain import LedgerEntry
from gateway.ledger.tables import UPDATABLE, entry_values, ledger

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
    # A write cut short (its caller cancelled mid-write) that may or may not have committed: its insert must not
    # fail on the row it may already have written (sinks write it as INSERT ... ON CONFLICT DO NOTHING).
    uncertain: bool = False

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

    # An asynchronous sink (a database over the network) whose `write` a lone write's caller may await itself,
    # holding the writer's sink lock, instead of handing it to the writer task (see the writer).
    writes_direct = False

    async def reset(self) -> None:
        """Forget the connection: a write on it was cut short, its state is unknown."""
        return None

    async def close(self) -> None:
        return None


def _split(batch: list[WriteOp]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], WriteOp | None, bool]:
    """The batch's insert rows, update rows, last heartbeat, and whether an insert is `uncertain`."""
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    beat: WriteOp | None = None
    uncertain = False
    for op in batch:
        kind = op.kind
        if kind == "insert":
            inserts.append(op.row())
            uncertain = uncertain or op.uncertain
        elif kind == "update":
            updates.append(op.row())
        else:
            beat = op
    return inserts, updates, beat, uncertain


def insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT that leaves a row already there (same request_id) as it is."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(ledger).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(ledger).on_conflict_do_nothing(index_elements=["request_id"])
    return ledger.insert().prefix_with("IGNORE")  # MySQL spelling; other dialects are not supported for ledgers


_UPDATE_BINDS = [(f"b_{k}", k) for k in ("request_id", *UPDATABLE)]


def _update_binds(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{b: u[k] for b, k in _UPDATE_BINDS} for u in updates]
