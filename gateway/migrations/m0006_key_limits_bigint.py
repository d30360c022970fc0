"""Key rate limits as 64-bit integers: `api_keys.rpm` and `api_keys.tpm` were 32-bit INTEGER on PostgreSQL, so
`tpm: 100000000000` failed the insert (issue 15). SQLite's INTEGER is already 64-bit: nothing to do there."""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 6
NAME = "key_limits_bigint"


def upgrade(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        return
    conn.execute(sa.text("ALTER TABLE api_keys ALTER COLUMN rpm TYPE BIGINT, ALTER COLUMN tpm TYPE BIGINT"))
