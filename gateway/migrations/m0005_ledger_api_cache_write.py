"""The ledger records which API a request came in on (`api`: chat, responses, messages, embeddings) and the tokens
a vendor reports writing to its prompt cache, with their cost in the deployment's and the reporting currency.

Rows written before this version were chat completions or embeddings that could not tell them apart: they become
`chat`, as every row then counted as one. They wrote 0 tokens to a cache; those that were priced get an exact 0 for
the new costs (unpriced rows keep NULL, like their other costs), so every priced row has a cost per direction.
Spelled out here rather than taken from `gateway/ledger/tables.py`: a migration must not change when the live
table definitions do. The money columns use the ledger's exact type (stored text on SQLite, NUMERIC on PostgreSQL),
the same compatibility promise as migration 1.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.ledger.tables import Money

VERSION = 5
NAME = "ledger api and cache_write columns"

# Exactly what `tables.money_text(Decimal(0))` stores on SQLite (18 decimals), so new and old zeros read alike.
_SQLITE_ZERO = "0." + "0" * 18


def upgrade(conn: sa.Connection) -> None:
    dialect = conn.dialect
    money = Money().dialect_impl(dialect).compile(dialect=dialect)
    bigint = sa.BigInteger().compile(dialect=dialect)
    for ddl in (
        "ALTER TABLE ledger ADD COLUMN api VARCHAR(16) DEFAULT 'chat' NOT NULL",
        f"ALTER TABLE ledger ADD COLUMN cache_write_tokens {bigint} DEFAULT 0 NOT NULL",
        f"ALTER TABLE ledger ADD COLUMN cache_write_cost {money}",
        f"ALTER TABLE ledger ADD COLUMN cache_write_cost_reporting {money}",
    ):
        conn.execute(sa.text(ddl))
    zero = _SQLITE_ZERO if dialect.name == "sqlite" else 0
    # A row's costs are written together (tables.cost_columns): priced rows have both totals, unpriced neither.
    conn.execute(sa.text("UPDATE ledger SET cache_write_cost = :z, cache_write_cost_reporting = :z "
                         "WHERE total_cost IS NOT NULL"), {"z": zero})
