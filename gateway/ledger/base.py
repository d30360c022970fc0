"""The seam between the request path and the ledger.

The pipeline calls `open` before a request is sent upstream and `finish` when it ends. Implementations:
`MemoryLedger` here (tests, `--no-ledger` benchmarks) and the SQL ledger in `gateway/ledger/writer.py`.
"""

from __future__ import annotations

from typing import Protocol

from gateway.domain import LedgerEntry


class Ledger(Protocol):
    async def start(self) -> None:
        """Migrate, recover rows of dead replicas, begin heartbeating."""

    async def stop(self) -> None:
        """Flush what is pending and close connections."""

    async def open(self, entry: LedgerEntry) -> None:
        """Record the request `in_flight`; returns once the row is durable (so a crash cannot lose it)."""

    async def finish(self, entry: LedgerEntry, *, wait: bool) -> None:
        """Complete the row (status, usage, cost). With `wait`, return only once durable."""

    def pending_rows(self) -> int:
        """Rows accepted but not yet durable (the `gateway_ledger_pending_rows` gauge)."""


class MemoryLedger:
    """Keeps rows in a dict: complete semantics, no durability. For tests and ledger-off benchmarks."""

    def __init__(self) -> None:
        self.rows: dict[str, LedgerEntry] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def open(self, entry: LedgerEntry) -> None:
        self.rows[entry.request_id] = entry

    async def finish(self, entry: LedgerEntry, *, wait: bool) -> None:
        self.rows[entry.request_id] = entry

    def pending_rows(self) -> int:
        return 0
