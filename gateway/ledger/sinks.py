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


_UPDATE_BINDS = [(f"b_{k}", k) for k in ("request_id", *UPDATABLE)]


def _update_binds(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{b: u[k] for b, k in _UPDATE_BINDS} for u in updates]
