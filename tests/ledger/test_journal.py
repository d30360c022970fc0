"""The spool journal file: order, durability framing, torn records, progress marks, locking."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from gateway.ledger import journal as J


def _open(path: Path) -> J.Journal:
    j = J.Journal(path)
    assert j.open(create=True)
    return j


def test_records_read_back_in_append_order_with_exact_values(tmp_path: Path) -> None:
    j = _open(tmp_path / "a.journal")
    when = datetime(2026, 5, 21, 12, 30, 1, 123456, tzinfo=timezone.utc)
    j.append([J.encode("insert", {"request_id": "r1", "cost": Decimal("0.0000008123"), "at": when, "n": None})])
    j.append([J.encode("update", {"request_id": "r1", "status": "success"}),
              J.encode("insert", {"request_id": "r2"})])
    got = [J.decode(p) for p, _ in j.read(0, None)]
    assert [(k, v["request_id"]) for k, v in got] == [("insert", "r1"), ("update", "r1"), ("insert", "r2")]
    assert got[0][1]["cost"] == Decimal("0.0000008123") and isinstance(got[0][1]["cost"], Decimal)
    assert got[0][1]["at"] == when and got[0][1]["n"] is None
    j.close()


def test_a_torn_last_record_is_skipped_and_overwritten_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "a.journal"
    j = _open(path)
    j.append([J.encode("insert", {"request_id": "r1"})])
    whole = path.stat().st_size
    j.close()
    torn = J.frame(J.encode("insert", {"request_id": "r2"}))
    with open(path, "ab") as f:  # a crash in the middle of an append
        f.write(torn[: len(torn) // 2])
    again = _open(path)
    assert [J.decode(p)[1]["request_id"] for p, _ in again.read(0, None)] == ["r1"]
    assert again.size == whole
    again.append([J.encode("insert", {"request_id": "r3"})])
    assert [J.decode(p)[1]["request_id"] for p, _ in again.read(0, None)] == ["r1", "r3"]
    again.close()


def test_a_corrupt_record_ends_the_readable_journal(tmp_path: Path) -> None:
    path = tmp_path / "a.journal"
    j = _open(path)
    j.append([J.encode("insert", {"request_id": f"r{i}"}) for i in range(3)])
    j.close()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte in the last record's payload
    path.write_bytes(bytes(data))
    again = _open(path)
    assert [J.decode(p)[1]["request_id"] for p, _ in again.read(0, None)] == ["r0", "r1"]
    again.close()


def test_the_progress_mark_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "a.journal"
    j = _open(path)
    j.append([J.encode("insert", {"request_id": f"r{i}"}) for i in range(4)])
    second_end = j.read(0, 2)[-1][1]
    j.mark_applied(second_end)
    j.close()
    again = _open(path)
    assert again.applied == second_end
    assert [J.decode(p)[1]["request_id"] for p, _ in again.read(again.applied, None)] == ["r2", "r3"]
    again.remove()
    assert not path.exists() and not again.applied_path.exists()


def test_a_journal_held_by_a_live_writer_cannot_be_taken(tmp_path: Path) -> None:
    path = tmp_path / "a.journal"
    owner = _open(path)
    other = J.Journal(path)
    assert not other.open(create=False)  # flock is per open file: a second open in this process is refused too
    owner.close()
    assert other.open(create=False)
    other.close()


def test_orphans_lists_other_journals_of_the_same_database_oldest_first(tmp_path: Path) -> None:
    tag = J.database_tag("postgresql://gw@db/ledger")
    other = J.database_tag("postgresql://gw@db/another")
    names = [f"b.{tag}.journal", f"a.{tag}.journal", f"mine.{tag}.journal", f"x.{tag}.journal.applied",
             f"c.{other}.journal"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    found = J.orphans(tmp_path, tag, own=tmp_path / f"mine.{tag}.journal")
    assert [p.name for p in found] == [f"b.{tag}.journal", f"a.{tag}.journal"]
    assert J.orphans(tmp_path / "missing", tag) == []
