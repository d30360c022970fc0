"""The ledger database: one async SQLAlchemy engine for SQLite or PostgreSQL, and versioned migrations.

Migrations are a small linear runner rather than Alembic: the schema is owned by this package alone, every
migration is a Python function over a synchronous SQLAlchemy connection (so SQLite and PostgreSQL share one
code path), and `schema_migrations` records what ran. Each migration lives in `gateway/migrations/mNNNN_*.py`
with `VERSION: int`, `NAME: str` and `def upgrade(conn: sqlalchemy.Connection) -> None`; they run in VERSION
order, each in its own transaction, and concurrent starters are serialised (PostgreSQL advisory lock; SQLite's
write lock).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import gateway.migrations as migrations_pkg

_ADVISORY_LOCK_ID = 0x6761_7465  # "gate"


def async_url(url: str) -> str:
    """`sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`; `postgresql://...` -> `postgresql+asyncpg://...`."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    aurl = async_url(url)
    if is_sqlite(aurl):
        engine = create_async_engine(aurl, connect_args={"timeout": 30})

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL: readers never block the writer; synchronous=NORMAL in WAL is still durable across a process
            # crash (kill -9), which is the failure the ledger must survive.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(aurl, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    upgrade: Callable[[sa.Connection], None]


def discover() -> list[Migration]:
    found: list[Migration] = []
    for info in pkgutil.iter_modules(migrations_pkg.__path__):
        if not info.name.startswith("m"):
            continue
        mod: ModuleType = importlib.import_module(f"{migrations_pkg.__name__}.{info.name}")
        found.append(Migration(mod.VERSION, mod.NAME, mod.upgrade))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


_versions_table = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
)


def _upgrade_sync(conn: sa.Connection, todo: list[Migration]) -> list[int]:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
    _versions_table.create(conn, checkfirst=True)
    done = {row[0] for row in conn.execute(sa.select(_versions_table.c.version))}
    applied = []
    for m in todo:
        if m.version in done:
            continue
        m.upgrade(conn)
        conn.execute(_versions_table.insert().values(version=m.version, name=m.name))
        applied.append(m.version)
    return applied


async def upgrade(engine: AsyncEngine) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied."""
    todo = discover()
    async with engine.begin() as conn:
        return await conn.run_sync(_upgrade_sync, todo)
