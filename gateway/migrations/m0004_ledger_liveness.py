"""Ledger replicas record their liveness lock (`ledger_replicas.liveness`), so recovery can tell at once that a
replica is gone (its lock is free) instead of waiting for its heartbeat to go stale. See
`gateway/ledger/liveness.py`. NULL for replicas that hold no trustworthy lock (and for rows written before)."""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 4
NAME = "ledger replica liveness locks"


def upgrade(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE ledger_replicas ADD COLUMN liveness VARCHAR(600)"))
