"""The `api_keys` and `teams` tables, as the store queries them (created by migration m0003; limits widened by m0006).

Budgets are stored as decimal text (never floats); a key's secret is never stored, only its keyed hash.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("budget", sa.String(64), nullable=True),  # reporting currency, exact decimal text
    sa.Column("budget_period", sa.String(16), nullable=True),  # day | month
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(200), nullable=False, index=True),
    sa.Column("hash", sa.String(128), nullable=False),  # hex HMAC-SHA256 of the whole key
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("budget", sa.String(64), nullable=True),
    sa.Column("budget_period", sa.String(16), nullable=True),
    sa.Column("rpm", sa.BigInteger, nullable=True),  # BIGINT since migration m0006
    sa.Column("tpm", sa.BigInteger, nullable=True),
)
