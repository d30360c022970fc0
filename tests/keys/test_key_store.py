"""Keys: issued once, stored only as a keyed hash, revoked on every replica within a second."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade
from gateway.decisions.limits import Budget
from gateway.errors import BadRequest, NotFound
from gateway.keys.secrets import derive_secret, parse_key
from gateway.keys.store import KeyStore
from gateway.keys.sync import KeySync

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = b"k" * 32


async def _all_text(engine: AsyncEngine) -> str:
    """Every value of every table, as one string: what someone who stole the database would see."""
    out = []
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        for name in names:
            for row in (await conn.execute(sa.text(f'SELECT * FROM "{name}"'))).all():
                out.append(" ".join(str(v) for v in row))
    return "\n".join(out)


async def test_key_is_never_stored_in_clear(sqlite_engine: AsyncEngine) -> None:
    store = KeyStore(sqlite_engine, SECRET)
    record, key = await store.create_key("search", budget=Budget(Decimal("100.5"), "month"), rpm=60, tpm=1000)
    assert key.startswith(f"gw-{record.id}-") and parse_key(key) == record.id
    secret_part = key.split("-", 2)[2]
    dump = await _all_text(sqlite_engine)
    assert record.id in dump and record.hash in dump
    assert key not in dump and secret_part not in dump
    assert "hash" not in record.public() and key not in str(record.public())


async def test_verify(sqlite_engine: AsyncEngine) -> None:
    store = KeyStore(sqlite_engine, SECRET)
    record, key = await store.create_key("search")
    assert (await store.verify(key)) == record
    assert await store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await store.verify("sk-openai-key") is None
    # Another server secret cannot verify it: the hash is keyed.
    assert await KeyStore(sqlite_engine, b"other" * 8).verify(key) is None
    await store.revoke_key(record.id)
    assert await store.verify(key) is None
    with pytest.raises(NotFound):
        await store.revoke_key("000000000000")


async def test_key_created_on_another_replica_is_accepted(sqlite_url: str, sqlite_engine: AsyncEngine) -> None:
    other = create_engine(sqlite_url)
    try:
        a, b = KeyStore(sqlite_engine, SECRET), KeyStore(other, SECRET)
        await b.reload()
        record, key = await a.create_key("search")
        assert (await b.verify(key)) == record  # a cache miss looks the id up once
    finally:
        await other.dispose()


async def _revocation_reaches_other_replica(url: str, redis_prefix: str | None) -> float:
    e1, e2 = create_engine(url), create_engine(url)
    r1 = aioredis.from_url(REDIS_URL) if redis_prefix else None
    r2 = aioredis.from_url(REDIS_URL) if redis_prefix else None
    await upgrade(e1)
    a, b = KeyStore(e1, SECRET), KeyStore(e2, SECRET)
    sa_, sb = (KeySync(a, r1, prefix=redis_prefix or "", reload_s=30 if r1 else 0.2),
               KeySync(b, r2, prefix=redis_prefix or "", reload_s=30 if r2 else 0.2))
    await sa_.start()
    await sb.start()
    try:
        record, key = await a.create_key("search")
        assert await b.verify(key) is not None  # B has it cached
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await a.revoke_key(record.id)
        while await b.verify(key) is not None:
            assert loop.time() - t0 < 1.0, "revocation not seen by the other replica within 1 s"
            await asyncio.sleep(0.01)
        return loop.time() - t0
    finally:
        await sa_.stop()
        await sb.stop()
        for r in (r1, r2):
            if r is not None:
                await r.aclose()
        await e1.dispose()
        await e2.dispose()


async def test_revocation_seen_by_other_replica_via_redis_sqlite(sqlite_url: str, redis_prefix: str) -> None:
    assert await _revocation_reaches_other_replica(sqlite_url, redis_prefix) < 0.2


async def test_revocation_seen_by_other_replica_via_redis_postgres(pg_url: str, redis_prefix: str) -> None:
    assert await _revocation_reaches_other_replica(pg_url, redis_prefix) < 0.2


async def test_revocation_seen_by_other_worker_without_redis(sqlite_url: str) -> None:
    await _revocation_reaches_other_replica(sqlite_url, None)


async def test_replica_starting_later_sees_revoked_set(sqlite_url: str, sqlite_engine: AsyncEngine,
                                                       redis_prefix: str) -> None:
    r = aioredis.from_url(REDIS_URL)
    try:
        a = KeyStore(sqlite_engine, SECRET)
        sync = KeySync(a, r, prefix=redis_prefix)
        await sync.start()
        record, key = await a.create_key("search")
        await a.revoke_key(record.id)
        await sync.stop()
        assert record.id in {m.decode() for m in await r.smembers(f"{redis_prefix}keys:revoked")}
    finally:
        await r.aclose()


async def test_teams(sqlite_engine: AsyncEngine) -> None:
    store = KeyStore(sqlite_engine, SECRET)
    await store.create_key("search")
    await store.set_team("ads", Budget(Decimal("500"), "month"))
    await store.set_team("ads", Budget(Decimal("600"), "day"))
    assert store.team_budget("ads") == Budget(Decimal("600"), "day")
    teams = {t.name: t.budget for t in await store.list_teams()}
    assert teams == {"ads": Budget(Decimal("600"), "day"), "search": None}
    fresh = KeyStore(sqlite_engine, SECRET)
    await fresh.reload()
    assert fresh.team_budget("ads") == Budget(Decimal("600"), "day")
    with pytest.raises(BadRequest):
        await store.set_team("bad team!", None)
    with pytest.raises(BadRequest):
        await store.create_key("t", rpm=0)


def test_secret_derivation() -> None:
    from pydantic import SecretStr

    from gateway.config.schema import GatewaySettings

    s1 = derive_secret(GatewaySettings(admin_key=SecretStr("admin-1")))
    assert s1 != derive_secret(GatewaySettings(admin_key=SecretStr("admin-2")))
    assert s1 != b"admin-1" and len(s1) == 32
