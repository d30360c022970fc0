"""The ledger: one row per client request (contract section 7) and the replicas' heartbeats.

Frozen at version 1: this is the schema as first shipped, written out in full so that later changes to
`gateway/ledger/tables.py` (the current schema) arrive as new migrations and never rewrite this one. The column
types (exact money, UTC times) are imported: their storage format is a compatibility promise of their own.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.ledger.tables import Money, UtcDateTime

VERSION = 1
NAME = "ledger and replica heartbeats"

metadata = sa.MetaData()

# BIGINT on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid, so rows are stored in insertion (≈ time)
# order and a month's range scan reads neighbouring pages.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("replica_id", sa.String(128), nullable=False),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("key_id", sa.String(64)),
    sa.Column("route", sa.String(128), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("upstream_model", sa.String(128), nullable=False),
    sa.Column("price_version", sa.Integer, nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("prompt_tokens_estimate", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    # In the deployment's own currency.
    sa.Column("currency", sa.String(3)),
    sa.Column("input_cost", Money()),
    sa.Column("cached_input_cost", Money()),
    sa.Column("output_cost", Money()),
    sa.Column("total_cost", Money()),
    # In the reporting currency of the row's price version (fx_rate: reporting units per 1 unit of `currency`).
    sa.Column("reporting_currency", sa.String(3)),
    sa.Column("fx_rate", Money()),
    sa.Column("input_cost_reporting", Money()),
    sa.Column("cached_input_cost_reporting", Money()),
    sa.Column("output_cost_reporting", Money()),
    sa.Column("total_cost_reporting", Money()),
    sa.Column("baseline_cost", Money()),  # reporting currency; NULL when no savings baseline applied
    sa.Column("money_scale", sa.SmallInteger, nullable=False),
    sa.Column("usage_source", sa.String(16)),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Integer),
    sa.Column("ttft_ms", sa.Integer),
    sa.Column("error_kind", sa.String(32)),
    sa.Index("ix_ledger_started_at", "started_at"),
    # Only in-flight rows: tiny, and exactly what recovery scans.
    sa.Index("ix_ledger_in_flight", "replica_id", sqlite_where=sa.text("status = 'in_flight'"),
             postgresql_where=sa.text("status = 'in_flight'")),
)

replicas = sa.Table(
    "ledger_replicas",
    metadata,
    sa.Column("replica_id", sa.String(128), primary_key=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
    sa.Column("stopped_at", UtcDateTime()),
)


def upgrade(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[ledger, replicas])
