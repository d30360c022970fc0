"""Recovery closes rows of dead replicas as `interrupted` with estimated, priced usage; never a live one's."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain import LedgerEntry, Price, PriceVersion, Usage
from gateway.ledger.recovery import InFlightRow, ReplicaState, heartbeat, is_abandoned, recover
from gateway.ledger.tables import ledger
from gateway.ledger.writer import SqlLedger
from tests.ledger.conftest import T0, insert_rows, row

STALE = 90.0
NOW = T0 + timedelta(minutes=10)
PRICE = Price("CNY", 1000, Decimal("0.0008"), Decimal("0.002"))
VERSION = PriceVersion(1, T0, "CNY", {}, {("volcengine", "doubao-pro-32k"): PRICE,
                                          ("openai", "gpt-4o"): Price("CNY", 1000, Decimal("0.01"), Decimal("0.02"))})


def in_flight(request_id: str, replica: str, started: datetime = T0, **extra: object) -> dict[str, object]:
    return row(request_id, started, replica_id=replica, status="in_flight", finished_at=None, usage_source=None,
               prompt_tokens_estimate=1000, **extra)


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return dict((await conn.execute(sa.select(ledger.c.request_id, ledger.c.status))).all())  # type: ignore


async def beat(engine: AsyncEngine, replica: str, at: datetime) -> None:
    async with engine.begin() as conn:
        await heartbeat(conn, replica, at, starting=True)


async def test_closes_dead_replicas_rows_and_leaves_live_ones(engine: AsyncEngine) -> None:
    await beat(engine, "dead", NOW - timedelta(seconds=STALE + 1))
    await beat(engine, "live", NOW - timedelta(seconds=5))
    await insert_rows(engine, [
        in_flight("d1", "dead", output_tokens=40),
        in_flight("l1", "live", started=T0 - timedelta(hours=1)),  # a long request of a live replica: untouched
        in_flight("orphan-old", "never-registered", started=NOW - timedelta(seconds=STALE + 1)),
        in_flight("orphan-young", "never-registered", started=NOW - timedelta(seconds=10)),
        row("done", T0, replica_id="dead", costs=("1", "0", "1")),
    ])
    closed = await recover(engine, NOW, STALE, price_lookup={1: VERSION}.get, baseline=("openai", "gpt-4o"))
    assert sorted(closed) == ["d1", "orphan-old"]
    assert await statuses(engine) == {"d1": "interrupted", "l1": "in_flight", "orphan-old": "interrupted",
                                      "orphan-young": "in_flight", "done": "success"}
    async with engine.connect() as conn:
        r = (await conn.execute(sa.select(ledger).where(ledger.c.request_id == "d1"))).one()
    assert (r.usage_source, r.input_tokens, r.cached_input_tokens, r.output_tokens) == ("estimated", 1000, 0, 40)
    assert r.input_cost == Decimal("0.0008") and r.output_cost == Decimal("0.00008")
    assert r.total_cost_reporting == Decimal("0.00088") and r.finished_at == NOW
    assert r.baseline_cost == Decimal("0.0108")  # 1000 in at 0.01/1K + 40 out at 0.02/1K
    assert await recover(engine, NOW, STALE) == []  # idempotent


async def test_stopped_replica_is_gone_at_once(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await heartbeat(conn, "bye", NOW - timedelta(seconds=1), stopping=True)
    await insert_rows(engine, [in_flight("b1", "bye")])
    assert await recover(engine, NOW, STALE) == ["b1"]


async def test_without_a_price_version_usage_is_estimated_and_cost_left_empty(engine: AsyncEngine) -> None:
    await beat(engine, "dead", NOW - timedelta(hours=1))
    await insert_rows(engine, [in_flight("d1", "dead", price_version=9)])
    await recover(engine, NOW, STALE, price_lookup={1: VERSION}.get)
    async with engine.connect() as conn:
        r = (await conn.execute(sa.select(ledger).where(ledger.c.request_id == "d1"))).one()
    assert r.status == "interrupted" and r.input_tokens == 1000 and r.total_cost is None


async def test_writer_start_recovers_its_dead_predecessor_and_dead_peers_but_not_live_peers(
        engine: AsyncEngine) -> None:
    await beat(engine, "host-1", NOW - timedelta(seconds=3))  # our previous incarnation, same id, just died
    await beat(engine, "peer-live", NOW - timedelta(seconds=3))
    await beat(engine, "peer-dead", NOW - timedelta(seconds=STALE * 2))
    await insert_rows(engine, [in_flight("mine", "host-1"), in_flight("peer", "peer-live"),
                               in_flight("gone", "peer-dead")])
    writer = SqlLedger(engine, replica_id="host-1", migrate=False, stale_after_s=STALE, clock=lambda: NOW,
                       price_lookup={1: VERSION}.get)
    await writer.start()
    try:
        await writer.open(LedgerEntry("new", NOW, "t", None, "auto", "volcengine", "doubao-pro-32k",
                                      "doubao-pro-32k", 1, "host-1", 10, False))
        assert await writer.recover() == []  # later recoveries never touch our own live rows
    finally:
        await writer.stop()
    assert await statuses(engine) == {"mine": "interrupted", "peer": "in_flight", "gone": "interrupted",
                                      "new": "in_flight"}


async def test_in_flight_progress_update_is_what_recovery_bills(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="w", migrate=False, clock=lambda: T0)
    await writer.start()
    e = LedgerEntry("s1", T0, "t", None, "auto", "volcengine", "doubao-pro-32k", "doubao-pro-32k", 1, "w", 10, True)
    await writer.open(e)
    await writer.finish(replace(e, usage=Usage(12, 0, 300, source="estimated")), wait=True)
    await writer.stop()  # graceful stop with a request still in flight: recoverable at once
    await recover(engine, T0 + timedelta(seconds=1), STALE, price_lookup={1: VERSION}.get)
    async with engine.connect() as conn:
        r = (await conn.execute(sa.select(ledger).where(ledger.c.request_id == "s1"))).one()
    assert (r.status, r.input_tokens, r.output_tokens) == ("interrupted", 12, 300)
    assert r.total_cost == Decimal("0.0006096")


def test_is_abandoned_rules() -> None:
    r = InFlightRow("x", "a", T0, "p", "m", 1, 10, 0, 0, 0)
    fresh = {"a": ReplicaState("a", NOW - timedelta(seconds=STALE))}
    late = {"a": ReplicaState("a", NOW - timedelta(seconds=STALE, microseconds=1))}
    assert not is_abandoned(r, fresh, NOW, STALE)
    assert is_abandoned(r, late, NOW, STALE)
    assert is_abandoned(r, fresh, NOW, STALE, own_replica="a")
    assert is_abandoned(r, {"a": ReplicaState("a", NOW, stopped_at=NOW)}, NOW, STALE)
    assert not is_abandoned(replace(r, started_at=NOW), {}, NOW, STALE)
    assert is_abandoned(r, {}, NOW, STALE)
