"""The spool journal: an append-only local file of ledger writes the database could not take (yet).

One file per writer process, `<spool_dir>/<replica>.journal`, held with `flock` for the writer's life so a process
starting later can tell an orphan (its writer is gone: replay it) from a live peer's journal (leave it alone).

Record: `[u32 length][u32 crc32 of payload][payload]`, big-endian; the payload is one write as JSON (`encode`).
Every `append` writes its records with one `write` and one `fsync` before returning, so a record that was
acknowledged survives a `kill -9` or a power cut. A crash in the middle of an append leaves at most a torn last
record: `read` stops at the first record whose length runs past the end of the file or whose checksum does not
match, and a failed append is cut back off the file (`ftruncate`) before anything else is appended.

Progress is kept beside it in `<file>.applied`: the offset up to which records are in the database, replaced
atomically (write, fsync, rename) after each applied batch. A crash between a database commit and that rename
replays the batch, which is harmless because applying is idempotent (`gateway/ledger/spool.py`).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import json
import os
import re
import struct
import zlib
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">II")
SUFFIX = ".journal"


# --------------------------------------------------------------------------------------------- payloads
def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$d" in obj:
            return Decimal(obj["$d"])
        if "$t" in obj:
            return datetime.fromisoformat(obj["$t"])
        if "$b" in obj:
            return base64.b64decode(obj["$b"])
    return obj


def encode(kind: str, values: dict[str, Any]) -> bytes:
    """One write as exact JSON: decimals as their text, times as ISO 8601 with their offset."""
    return json.dumps({"k": kind, "v": values}, default=_default, separators=(",", ":")).encode()


def decode(payload: bytes) -> tuple[str, dict[str, Any]]:
    obj = json.loads(payload, object_hook=_hook)
    return obj["k"], obj["v"]


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def database_tag(database: str) -> str:
    """Names the ledger database a journal belongs to (a hash of what identifies it), so gateways with different
    ledgers sharing a spool directory do not replay each other's journals."""
    return hashlib.sha256(database.encode()).hexdigest()[:10]


def journal_name(replica_id: str, tag: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", replica_id)[:80]
    return f"{safe}-{hashlib.sha256(replica_id.encode()).hexdigest()[:12]}.{tag}{SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """One journal file, locked by this process while open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.applied_path = path.with_name(path.name + ".applied")
        self._fd: int | None = None
        self.size = 0  # bytes of whole records written (the offset the next append starts at)
        self.applied = 0  # offset up to which records are in the database

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self, *, create: bool) -> bool:
        """Open and lock the file; False if another live process holds it (or, without `create`, it is gone)."""
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._fd = fd
        if create:
            _fsync_dir(self.path.parent)  # the file itself must survive a crash, not only its contents
        self.applied = self._read_applied()
        self.size = self._valid_end()
        return True

    def _read_applied(self) -> int:
        try:
            return int(self.applied_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _valid_end(self) -> int:
        """The end of the last whole record (a torn tail is ignored and overwritten by the next append)."""
        end = self.applied
        for _, nxt in self.read(end, limit=None):
            end = nxt
        return end

    def append(self, payloads: list[bytes]) -> None:
        """Durable before returning (write + fsync); on failure nothing of it remains in the file."""
        fd = self._require()
        data = b"".join(frame(p) for p in payloads)
        try:
            written = os.pwrite(fd, data, self.size)
            if written != len(data):
                raise OSError(errno.EIO, f"short write to the ledger journal ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(data)

    def read(self, start: int, limit: int | None = 500) -> list[tuple[bytes, int]]:
        """Whole records from `start`: (payload, offset after it); stops at the end or at a torn record."""
        fd = self._require()
        out: list[tuple[bytes, int]] = []
        pos = start
        while limit is None or len(out) < limit:
            head = os.pread(fd, _HEADER.size, pos)
            if len(head) < _HEADER.size:
                break
            length, crc = _HEADER.unpack(head)
            payload = os.pread(fd, length, pos + _HEADER.size)
            if len(payload) < length or zlib.crc32(payload) != crc:
                break  # torn (crash mid-append) or garbage: nothing after it was acknowledged
            pos += _HEADER.size + length
            out.append((payload, pos))
        return out

    def mark_applied(self, offset: int) -> None:
        tmp = self.applied_path.with_name(self.applied_path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(str(offset))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.applied_path)
        self.applied = offset

    def remove(self) -> None:
        """Delete the drained journal (while still holding its lock), durably, then close it."""
        self.applied_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        self.close()
        self.size = self.applied = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"the ledger journal {self.path} is not open")
        return self._fd


def orphans(spool_dir: Path, tag: str, own: Path | None = None) -> list[Path]:
    """Journal files of the database `tag` in `spool_dir` other than `own`, oldest first (whether their writer
    lives is for `open`)."""
    if not spool_dir.is_dir():
        return []
    found = [p for p in spool_dir.iterdir() if p.name.endswith(f".{tag}{SUFFIX}") and p != own]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))
