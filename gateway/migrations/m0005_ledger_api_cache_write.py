"""The ledger records which API a request came in on (`api`: chat, responses, messages, embeddings) and the tokens
a vendor reports writing to its prompt cache, with their cost in the deployment's and the reporting currency.

Rows written before this version were chat completions or embeddings that could not tell them apart: they read as
`chat`, as every row then counted as one, with 0 tokens written to a cache at an exact 0 cost. Those values are the
columns' defaults rather than an UPDATE: adding a column with a constant default rewrites no row on SQLite or
PostgreSQL, so a ledger of millions of rows upgrades at once (an UPDATE took 3.3 s per 200,000 SQLite rows), and
rows that replicas not yet upgraded keep writing during a rolling deploy get the same values. The gateway's own
writers always set every column (unpriced rows get NULL costs, as for the other directions).
Spelled out here rather than taken from `gateway/ledger/tables.py`: a migration must not change when the live
table definitions do. The money columns use the ledger's exact type (text on SQLite, NUMERIC on PostgreSQL), the
same compatibility promise as migration 1.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.ledger.tables import Money

VERSION = 5
NAME = "ledger api and cache_write columns"

# Exactly what `tables.money_text(Decimal(0))` stores on SQLite (18 decimals), so the default sums like any zero.
_SQLITE_ZERO = "'0." + "0" * 18 + "'"


def upgrade(conn: sa.Connection) -> None:
    dialect = conn.dialect
    money = Money().dialect_impl(dialect).compile(dialect=dialect)
    bigint = sa.BigInteger().compile(dialect=dialect)
    zero = _SQLITE_ZERO if dialect.name == "sqlite" else "0"
    for ddl in (
        "ALTER TABLE ledger ADD COLUMN api VARCHAR(16) DEFAULT 'chat' NOT NULL",
        f"ALTER TABLE ledger ADD COLUMN cache_write_tokens {bigint} DEFAULT 0 NOT NULL",
        f"ALTER TABLE ledger ADD COLUMN cache_write_cost {money} DEFAULT {zero}",
        f"ALTER TABLE ledger ADD COLUMN cache_write_cost_reporting {money} DEFAULT {zero}",
    ):
        conn.execute(sa.text(ddl))
