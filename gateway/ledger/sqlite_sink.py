"""The embedded ledger's sink: SQLite.

SQLite (`SqliteSink`): a stdlib `sqlite3` connection (WAL, synchronous=NORMAL: durable across a process crash):
BEGIN IMMEDIATE, one executemany per statement, COMMIT, on the event loop's thread (a commit is a write into the
page cache), falling back to a dedicated thread whenever the database is locked by someone else; checkpoints
(the only fsyncs) run in that thread on a connection of their own, concurrently with the commits
(`gateway/ledger/checkpoint.py`). Values are stored in exactly the format SQLAlchemy's column types use
(`gateway/ledger/sqlite_rows.py`, checked by a parity test), so every reader sees the same rows. It can also
commit a lone write synchronously, in the caller's coroutine (`commit_now`; see the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from gateway.ledger.checkpoint import WalCheckpointer
from gateway.ledger.sinks import Sink, WriteOp
from gateway.ledger.sqlite_rows import (INSERT_CONV, INSERT_SQL, UPDATE_CONV, UPDATE_SQL, insert_row, sqlite_params,
                                         sqlite_time, update_row)

log = logging.getLogger(__name__)


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
