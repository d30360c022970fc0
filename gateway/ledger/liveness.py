"""Liveness locks: each ledger writer holds a lock for its whole life, so recovery can tell at once whether the
replica that opened an in-flight row is still running, instead of waiting for its heartbeat to go stale.

- PostgreSQL: a session-level advisory lock on a 64-bit hash of the replica id, held by a dedicated connection.
  The server drops it when the session ends (process killed, host gone), so `pg_try_advisory_xact_lock(key)`
  succeeding from another session means the replica is gone.
- SQLite: `flock` on `<db>.replicas/<replica_id>.lock`, held open for the writer's lifetime; the kernel releases
  it when the process dies (kill -9 included). A lock only proves something to a process on the same kernel, so
  the marker records the boot id, and a prober on another host (or another boot) ignores it.

The writer records its lock in `ledger_replicas.liveness` (the *marker*). Recovery treats a replica whose
marker's lock it can take as dead at once, a replica whose lock is held as alive whatever its heartbeat says, and
anything it cannot decide (no marker, foreign host, lock file missing) by the heartbeat rule. A lock that cannot be
trusted (the self-test below fails: a pooler in transaction mode, a file system whose locks are no-ops) is not
recorded, so such deployments fall back to heartbeats rather than ever closing a live replica's rows.

Known limit (PostgreSQL): if a live replica's lock connection is cut (server restart, network), other replicas may
take it for dead until it re-acquires the lock on its next heartbeat. Rows it then finishes overwrite the
`interrupted` status recovery gave them, so the bill ends right; only the interval in between shows them early.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

PG_PREFIX = "pg-advisory:"
FLOCK_PREFIX = "flock:"


def advisory_key(replica_id: str) -> int:
    """A signed 64-bit key for the replica (the int8 key space of PostgreSQL advisory locks)."""
    return int.from_bytes(hashlib.sha256(b"gateway-ledger-replica:" + replica_id.encode()).digest()[:8], "big",
                          signed=True)


def boot_id() -> str:
    """Identifies the running kernel: flock between two processes is only meaningful when these are equal."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "host-" + socket.gethostname()


def lock_dir_for(database: str) -> Path:
    return Path(database + ".replicas")


def lock_file_name(replica_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", replica_id)[:80]
    return f"{safe}-{hashlib.sha256(replica_id.encode()).hexdigest()[:12]}.lock"


def sqlite_database(engine: AsyncEngine) -> str | None:
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return os.path.abspath(db)


class LockUnavailable(RuntimeError):
    """Our own replica id is locked by another live process (two processes configured with one replica id)."""


# ------------------------------------------------------------------------------------------------ holding
class ReplicaLock:
    """The lock this writer holds; `marker` is what it records for probers (None: no trustworthy lock)."""

    marker: str | None = None

    async def acquire(self) -> None:
        return None

    async def check(self) -> None:
        """Called with each heartbeat: make sure the lock is still held (re-acquire it if it was lost)."""
        return None

    async def release(self) -> None:
        return None


def _lock_nb(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


class FileLock(ReplicaLock):
    """`flock` on `<db>.replicas/<replica>.lock`, held until release() or process death."""

    def __init__(self, database: str, replica_id: str, *, wait_s: float = 5.0) -> None:
        self.path = lock_dir_for(database) / lock_file_name(replica_id)
        self.replica_id = replica_id
        self._wait_s = wait_s
        self._fd: int | None = None

    async def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.warning("no ledger liveness lock (cannot create %s: %s); recovery falls back to heartbeats",
                        self.path.parent, e)
            return
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if _lock_nb(fd):
                # A prober may have unlinked the file between our open and our lock: then retry on a new one.
                if _same_file(fd, self.path):
                    break
                os.close(fd)
                continue
            os.close(fd)
            if asyncio.get_running_loop().time() > deadline:
                raise LockUnavailable(f"replica id {self.replica_id!r} is locked by another live process "
                                      f"({self.path}); give every gateway process its own replica_id")
            await asyncio.sleep(0.05)  # a prober holds it for the moment of a recovery
        self._fd = fd
        if not self._self_test():
            log.warning("flock is not enforced on %s; recovery falls back to heartbeats", self.path)
            return
        with open(fd, "w", closefd=False) as f:  # for people looking at the directory
            f.truncate(0)
            f.write(f"{self.replica_id}\n{os.getpid()}\n")
        self.marker = f"{FLOCK_PREFIX}{boot_id()}:{self.path}"

    def _self_test(self) -> bool:
        probe = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            return not _lock_nb(probe)
        finally:
            os.close(probe)

    async def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self.marker is not None and _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)  # unlink while still holding it: nobody mistakes it for dead
        finally:
            os.close(self._fd)
            self._fd = None
            self.marker = None


class AdvisoryLock(ReplicaLock):
    """A session-level PostgreSQL advisory lock held by one dedicated connection of `engine`."""

    def __init__(self, engine: AsyncEngine, replica_id: str, *, wait_s: float = 5.0) -> None:
        self._engine = engine
        self.replica_id = replica_id
        self.key = advisory_key(replica_id)
        self._wait_s = wait_s
        self._conn: AsyncConnection | None = None

    async def _take(self) -> bool:
        conn = await self._engine.connect()
        try:
            got = bool((await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})).scalar())
            await conn.commit()  # the lock is session-level: it outlives the transaction; don't idle in one
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def acquire(self) -> None:
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while not await self._take():
            if asyncio.get_running_loop().time() > deadline:
                raise LockUnavailable(f"replica id {self.replica_id!r} holds its PostgreSQL advisory lock in "
                                      "another live session; give every gateway process its own replica_id")
            await asyncio.sleep(0.05)
        if await self._self_test():
            self.marker = f"{PG_PREFIX}{self.key}"
        else:
            log.warning("PostgreSQL advisory locks are not session-stable here (a pooler in transaction mode?); "
                        "ledger recovery falls back to heartbeats")

    async def _self_test(self) -> bool:
        async with self._engine.begin() as other:
            if await other.scalar(sa.text("SELECT pg_backend_pid()")) == await self._backend_pid():
                return False
            return not await other.scalar(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": self.key})

    async def _backend_pid(self) -> int | None:
        assert self._conn is not None
        pid = await self._conn.scalar(sa.text("SELECT pg_backend_pid()"))
        await self._conn.commit()
        return pid

    async def check(self) -> None:
        if self.marker is None:
            return
        try:
            if self._conn is not None:
                await self._backend_pid()
                return
        except Exception as e:
            log.error("ledger liveness connection lost (%s); re-acquiring the replica lock", e)
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                    await conn.close()
        if self._conn is None:
            if not await self._take():
                log.error("could not re-acquire the ledger liveness lock yet; retrying with the next heartbeat")

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        self.marker = None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            await conn.commit()
        with contextlib.suppress(Exception):
            await conn.close()


def lock_for(engine: AsyncEngine, replica_id: str, *, wait_s: float = 5.0) -> ReplicaLock:
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine, replica_id, wait_s=wait_s)
    database = sqlite_database(engine)
    if database is not None:
        return FileLock(database, replica_id, wait_s=wait_s)
    return ReplicaLock()


# ------------------------------------------------------------------------------------------------ probing
@dataclass
class Probe:
    """The verdicts of one recovery: replica id -> True (its lock is held: alive) / False (free: dead).

    Replicas missing from `held` are undecided (heartbeat rule). For SQLite the locks of dead replicas stay held by
    the prober until `done()` (after the recovery committed), which then removes their files.
    """

    held: dict[str, bool] = field(default_factory=dict)
    _dead_files: list[tuple[int, Path]] = field(default_factory=list)

    def done(self) -> None:
        for fd, path in self._dead_files:
            try:
                if _same_file(fd, path):
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            finally:
                os.close(fd)
        self._dead_files.clear()


async def probe(conn: AsyncConnection, markers: Mapping[str, str | None]) -> Probe:
    """Test the liveness lock of each replica in `markers` (replica id -> its recorded marker).

    PostgreSQL locks are tried with `pg_try_advisory_xact_lock` inside the caller's transaction `conn`, so they are
    released when that transaction ends.
    """
    result = Probe()
    my_boot: str | None = None
    pg_keys: dict[str, int] = {}
    for replica, marker in markers.items():
        if not marker:
            continue
        if marker.startswith(PG_PREFIX):
            if conn.dialect.name == "postgresql":
                pg_keys[replica] = int(marker[len(PG_PREFIX):])
        elif marker.startswith(FLOCK_PREFIX):
            boot, _, path_text = marker[len(FLOCK_PREFIX):].partition(":")
            my_boot = my_boot or boot_id()
            if boot != my_boot or not path_text:
                continue  # another kernel's lock proves nothing here
            path = Path(path_text)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue  # missing: undecided
            try:
                free = _lock_nb(fd) and _same_file(fd, path)
            except OSError:
                os.close(fd)
                continue
            result.held[replica] = not free
            if free:
                result._dead_files.append((fd, path))
            else:
                os.close(fd)
    if pg_keys:
        replicas = list(pg_keys)
        rows = (await conn.execute(
            sa.text("SELECT k, pg_try_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS t(k)"),
            {"keys": [pg_keys[r] for r in replicas]})).all()
        got = {int(k): bool(ok) for k, ok in rows}
        for r in replicas:
            result.held[r] = not got[pg_keys[r]]
    return result
