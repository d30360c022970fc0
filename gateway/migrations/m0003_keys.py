"""Client API keys and team budgets.

The tables are spelled out here rather than imported from gateway.keys.tables: a migration is a snapshot of the
schema at its version and must not change when the live table definitions do.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 3
NAME = "keys"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "teams",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("budget", sa.String(64), nullable=True),
        sa.Column("budget_period", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "api_keys",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("team", sa.String(200), nullable=False, index=True),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("budget", sa.String(64), nullable=True),
        sa.Column("budget_period", sa.String(16), nullable=True),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.Integer, nullable=True),
    )
    md.create_all(conn)
