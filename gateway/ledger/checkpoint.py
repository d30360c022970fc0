"""WAL checkpoints for the SQLite ledger, off the commit path.

A checkpoint copies the WAL back into the database file and fsyncs both: milliseconds, where a commit (WAL,
synchronous=NORMAL) is tens of microseconds. Run on the writer's own connection and awaited by the writer, as
before, every commit submitted meanwhile waited for those fsyncs (the p90 of a request at concurrency 1).

So a checkpoint runs on its OWN connection, in the sink's thread, while commits go on: WAL mode allows one
checkpointer concurrently with the writer. The writer only fires it (between batches, or after an inline commit)
and never awaits it; at most one runs at a time.

Bounding the WAL. SQLite restarts the WAL from its beginning only at the first write after a checkpoint copied ALL
of it; a PASSIVE checkpoint that overlaps writes leaves the frames they appended, so under sustained load the WAL
would keep growing. Each checkpoint reports the WAL's size, and the commits since add an estimate; once that
exceeds `cap_pages` frames, the writer falls back to waiting for a checkpoint between two batches (inline commits
are off meanwhile): with nothing appended while it runs, it copies everything and the next commit restarts the
WAL. It is short: background checkpoints already copied all but the last `every_pages` or so.

Its mode is PASSIVE, as before, not RESTART/TRUNCATE: those wait (busy handler) for readers still on old
snapshots, and a month's report can read for seconds; billing writes must not stall behind it. A reader that
pins old frames keeps the WAL from restarting in any mode short of blocking writes, and then the next background
checkpoint reports the WAL over the cap again, so the writer waits once more per `every_pages`, not per batch.
`journal_size_limit` (set by the sink) cuts the file back at the next restart after such a spike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointResult:
    """The row of `PRAGMA wal_checkpoint`: busy, WAL frames, frames copied (-1 each when it could not run)."""

    busy: bool
    log_frames: int
    checkpointed: int

    @property
    def complete(self) -> bool:
        """All of the WAL is in the database file: the next write restarts the WAL (unless a reader pins it)."""
        return not self.busy and self.log_frames >= 0 and self.checkpointed == self.log_frames


class WalCheckpointer:
    """Owns the checkpoint connection. The `*_sync` methods run in the sink's thread; the rest on the loop."""

    def __init__(self, database: str, pool: ThreadPoolExecutor, *, every_pages: int, cap_pages: int) -> None:
        self._database = database
        # The sink's thread: one checkpoint at a time, and a commit that must wait for another process's lock
        # (rare) waits behind a running checkpoint (milliseconds) rather than beside it.
        self._pool = pool
        self._every_pages = every_pages
        self.cap_pages = cap_pages
        self._conn: sqlite3.Connection | None = None
        self._running: asyncio.Future[CheckpointResult] | None = None
        # WAL size bookkeeping, in pages: `_written` is an estimate of all pages appended by this process;
        # `_known` the WAL's size (frames) reported by the last checkpoint, `_known_at` `_written` when it started.
        self._written = 0
        self._started_at = 0  # `_written` when the last checkpoint started (when the next one is due)
        self._known = 0
        self._known_at = 0
        self._wait_above = cap_pages
        self.over_cap = False  # the writer must wait for a checkpoint before its next batch
        self.last: CheckpointResult | None = None
        self.background = 0  # checkpoints fired and forgotten (tests and benchmarks read these)
        self.waited = 0  # checkpoints the writer waited for (WAL over the cap)

    # ------------------------------------------------------------------------------------------ threads
    def open_sync(self) -> None:
        # timeout 0: PASSIVE never waits anyway; synchronous=NORMAL: the fsyncs that keep a checkpoint safe on power
        # loss (WAL before copying, database after) are decided by the checkpointing connection.
        conn = sqlite3.connect(self._database, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn

    def close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def checkpoint_sync(self) -> CheckpointResult:
        if self._conn is None:
            raise RuntimeError("the checkpoint connection is closed")
        busy, log_frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return CheckpointResult(bool(busy), int(log_frames), int(done))

    # ------------------------------------------------------------------------------------------ the loop
    @property
    def running(self) -> bool:
        return self._running is not None

    def wrote(self, pages: int) -> None:
        """After each commit: `pages` is an estimate of what it appended. The estimate (not only the last
        checkpoint's report) decides the cap, so a background checkpoint that is slow to report cannot let the WAL
        grow unchecked; each report replaces the estimate by the real size."""
        self._written += pages
        if self._known + self._written - self._known_at > self._wait_above:
            self.over_cap = True

    def maybe_start(self) -> None:
        """Fire a background checkpoint if enough was written since the last one and none is running. Never
        raises: it runs after commits, which must not be reported failed (and retried) for a checkpoint's sake."""
        if self._written - self._started_at < self._every_pages or self._running is not None or self._conn is None:
            return
        try:
            fut = asyncio.get_running_loop().run_in_executor(self._pool, self.checkpoint_sync)
        except Exception as e:  # the pool is shutting down: the sink is closing
            log.warning("ledger WAL checkpoint not started: %s", e)
            return
        mark = self._started_at = self._written
        self.background += 1
        self._running = fut
        fut.add_done_callback(lambda f: self._finished(f, mark))

    def _finished(self, fut: asyncio.Future[CheckpointResult], mark: int) -> None:
        self._running = None
        if fut.cancelled():
            return
        error = fut.exception()
        if error is not None:  # the next one will try again; the WAL just grows a little meanwhile
            log.warning("ledger WAL checkpoint failed: %s", error)
            return
        result = fut.result()
        self.last = result
        if result.log_frames >= 0:  # -1: another connection was checkpointing; nothing learnt
            self._known, self._known_at = result.log_frames, mark
            if result.log_frames <= self.cap_pages:
                self._wait_above = self.cap_pages
            self.over_cap = self._known + self._written - mark > self._wait_above

    async def between_batches(self) -> None:
        """The writer's maintenance: usually just fire a checkpoint; over the cap, wait for one."""
        if not self.over_cap:
            self.maybe_start()
            return
        if self._running is not None:  # it copies most of the WAL; the next one only what was appended meanwhile
            await asyncio.wait([self._running])
            if not self.over_cap:  # its report replaced an estimate that overshot (batches share index pages)
                return
        self.waited += 1
        self._started_at = mark = self._written
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, self.checkpoint_sync)
        except Exception as e:
            log.warning("ledger WAL checkpoint failed: %s", e)
        else:
            self.last = result
            if result.complete:  # the next commit restarts the WAL (a reader may yet hold it: next report says)
                self._known, self._known_at, self._wait_above = 0, mark, self.cap_pages
            else:
                # A reader holds old frames: waiting per batch would not free them. Wait again only after another
                # `every_pages`, unless a background checkpoint reports the WAL back under the cap first.
                log.info("ledger WAL over %d frames and held by a reader (%s)", self.cap_pages, result)
                if result.log_frames >= 0:
                    self._known, self._known_at = result.log_frames, mark
                self._wait_above = max(self.cap_pages, self._known) + self._every_pages
        self.over_cap = False

    async def close(self) -> None:
        """Let a running background checkpoint end (it uses the connection), then close it."""
        if self._running is not None:
            await asyncio.wait([self._running])
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._pool, self.close_sync)
