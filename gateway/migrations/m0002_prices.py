"""Price versions: one row per immutable version, its whole table as the gateway's own JSON format.

One row per version (not per price) because a version is only ever written and read whole; the body is the
format of `GET /admin/prices`, decimals as strings, so it stays exact and readable with plain SQL tools.
`effective_from` is ISO 8601 text in UTC with a fixed width, so text order is time order on every database.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 2
NAME = "price versions"

metadata = sa.MetaData()

price_versions = sa.Table(
    "price_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("effective_from", sa.String(40), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("source", sa.String(500), nullable=False),  # config, admin, import:<format>, feed:<url>
    sa.Column("body", sa.Text, nullable=False),
)


def upgrade(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[price_versions])
