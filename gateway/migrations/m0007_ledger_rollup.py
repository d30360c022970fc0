"""Daily roll-ups of closed ledger days, so a month's report reads thousands of rows instead of millions
(`gateway/ledger/rollup.py` fills and checks them; reports fall back to the ledger for anything not rolled up).

Spelled out here rather than imported: a migration is a snapshot of the schema at its version.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 7
NAME = "ledger daily roll-ups"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "ledger_rollup_days",
        md,
        sa.Column("day", sa.String(10), primary_key=True),  # a UTC calendar day, 'YYYY-MM-DD'
        sa.Column("row_count", sa.BigInteger, nullable=False),  # ledger rows of that day when it was rolled up
        sa.Column("rolled_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "ledger_rollup",
        md,
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("team", sa.String(128)),
        sa.Column("route", sa.String(128)),
        sa.Column("provider", sa.String(64)),
        sa.Column("model", sa.String(128)),
        sa.Column("api", sa.String(16)),
        sa.Column("price_version", sa.Integer, nullable=False),
        sa.Column("has_baseline", sa.Boolean, nullable=False),
        sa.Column("reporting_currency", sa.String(3)),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        # Each money sum as three exact integers: units, then decimals 1-9 and 10-18 (each below 1e9), so summing
        # them is integer addition on both backends (no text parsing per row).
        *(sa.Column(f"{m}_{piece}", sa.BigInteger, nullable=False)
          for m in ("input_cost_reporting", "cached_input_cost_reporting", "cache_write_cost_reporting",
                    "output_cost_reporting", "baseline_cost")
          for piece in ("units", "nano", "atto")),
        sa.Index("ix_ledger_rollup_day", "day"),
    )
    md.create_all(conn)
