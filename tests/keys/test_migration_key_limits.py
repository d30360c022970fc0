"""Migration m0006: `api_keys.rpm` / `tpm` become BIGINT on PostgreSQL, keeping the limits keys already have."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from gateway.db import _upgrade_sync, create_engine, discover, upgrade
from gateway.keys.tables import api_keys


async def test_existing_keys_keep_their_limits_and_take_64_bit_ones_after_the_upgrade(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_sync, [m for m in discover() if m.version < 6])
        row = {"id": "k1", "team": "t", "hash": "h", "created_at": datetime.now(timezone.utc), "rpm": 60,
               "tpm": 2_000_000_000}
        async with engine.begin() as conn:
            await conn.execute(api_keys.insert(), [row])
        assert 6 in await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(api_keys.insert(), [{**row, "id": "k2", "tpm": 100_000_000_000, "rpm": 2**53 - 1}])
            types = dict((await conn.execute(sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'api_keys' AND column_name IN ('rpm', 'tpm')"))).all())
            limits = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.rpm, api_keys.c.tpm)
                                         .order_by(api_keys.c.id))).all()
        assert types == {"rpm": "bigint", "tpm": "bigint"}
        assert [tuple(r) for r in limits] == [("k1", 60, 2_000_000_000), ("k2", 2**53 - 1, 100_000_000_000)]
    finally:
        await engine.dispose()
