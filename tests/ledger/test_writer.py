"""The SQL ledger writer: durable in-flight rows, completed rows, group commit."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.decisions.pricing import price_usage
from gateway.domain import LedgerEntry, Price, PriceVersion, Usage
from gateway.ledger.tables import ledger, replicas
from gateway.ledger.writer import SqlLedger
from tests.ledger.conftest import T0

PRICE = Price("USD", 1_000_000, Decimal("2.5"), Decimal("10"), Decimal("1.25"))
VERSION = PriceVersion(3, T0, "CNY", {"USD": Decimal("7.10")}, {("openai", "gpt-4o"): PRICE})


def entry(request_id: str, replica: str = "rep-a") -> LedgerEntry:
    return LedgerEntry(request_id=request_id, started_at=T0, team="finance", key_id="key1", route="auto",
                       provider="openai", model="gpt-4o", upstream_model="gpt-4o-2024", price_version=3,
                       replica_id=replica, prompt_tokens_estimate=120, stream=True)


async def fetch(engine: AsyncEngine, request_id: str) -> sa.Row:  # type: ignore[type-arg]
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(ledger).where(ledger.c.request_id == request_id))).one()


async def test_open_is_durable_in_flight_and_finish_completes_every_column(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False, clock=lambda: T0 + timedelta(seconds=2))
    await writer.start()
    try:
        e = entry("req-1")
        await writer.open(e)
        opened = await fetch(engine, "req-1")
        assert opened.status == "in_flight" and opened.replica_id == "rep-a" and opened.finished_at is None
        assert opened.started_at == T0 and opened.prompt_tokens_estimate == 120 and opened.total_cost is None

        usage = Usage(100, 20, 50)
        cost = price_usage(usage, PRICE, VERSION, T0)
        await writer.finish(replace(e, status="success", usage=usage, cost=cost, baseline_cost=Decimal("0.02"),
                                    attempts=2, latency_ms=800, ttft_ms=120), wait=True)
        r = await fetch(engine, "req-1")
    finally:
        await writer.stop()
    assert (r.status, r.usage_source, r.attempts, r.latency_ms, r.ttft_ms) == ("success", "provider", 2, 800, 120)
    assert (r.input_tokens, r.cached_input_tokens, r.output_tokens) == (100, 20, 50)
    assert (r.team, r.key_id, r.route, r.provider, r.model, r.upstream_model, r.price_version) == (
        "finance", "key1", "auto", "openai", "gpt-4o", "gpt-4o-2024", 3)
    assert r.currency == "USD" and r.reporting_currency == "CNY" and r.fx_rate == Decimal("7.10")
    assert r.input_cost == Decimal("0.00025") and r.cached_input_cost == Decimal("0.000025")
    assert r.output_cost == Decimal("0.0005") and r.total_cost == Decimal("0.000775")
    assert r.total_cost_reporting == Decimal("0.0055025") and r.output_cost_reporting == Decimal("0.00355")
    assert r.baseline_cost == Decimal("0.02")
    assert r.finished_at == T0 + timedelta(seconds=2)


async def test_concurrent_writes_are_group_committed(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    try:
        await asyncio.gather(*(writer.open(entry(f"req-{i}")) for i in range(100)))
        after_open = writer.transactions
        await asyncio.gather(*(writer.finish(replace(entry(f"req-{i}"), status="success", usage=Usage(1, 0, 1)),
                                             wait=True) for i in range(100)))
        after_finish = writer.transactions - after_open
    finally:
        await writer.stop()
    # 200 writes; the first of each wave commits alone, the other 99 wait and go together.
    assert after_open <= 3 and after_finish <= 3, (after_open, after_finish)
    async with engine.connect() as conn:
        done = (await conn.execute(sa.select(sa.func.count()).where(ledger.c.status == "success"))).scalar()
    assert done == 100


async def test_unwaited_finishes_are_pending_until_flushed_and_stop_flushes_them(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    await writer.open(entry("req-1"))
    await writer.finish(replace(entry("req-1"), status="client_disconnected", usage=Usage(5, 0, 3)), wait=False)
    assert writer.pending_rows() == 1
    await writer.stop()
    assert writer.pending_rows() == 0
    r = await fetch(engine, "req-1")
    assert r.status == "client_disconnected" and r.output_tokens == 3
    async with engine.connect() as conn:
        rep = (await conn.execute(sa.select(replicas).where(replicas.c.replica_id == "rep-a"))).one()
    assert rep.stopped_at is not None


async def test_one_bad_row_does_not_fail_its_batch(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    try:
        await writer.open(entry("dup"))
        results = await asyncio.gather(writer.open(entry("dup")), writer.open(entry("fine-1")),
                                       writer.open(entry("fine-2")), return_exceptions=True)
    finally:
        await writer.stop()
    assert isinstance(results[0], Exception) and results[1:] == [None, None]
    assert (await fetch(engine, "fine-2")).status == "in_flight"


async def test_cancelled_caller_does_not_cancel_the_write(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep-a", migrate=False)
    await writer.start()
    try:
        task = asyncio.create_task(writer.open(entry("req-1")))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await writer.stop()
    assert (await fetch(engine, "req-1")).status == "in_flight"


async def test_sqlite_fast_path_stores_exactly_what_sqlalchemy_stores(engine: AsyncEngine, ledger_url: str) -> None:
    """The stdlib-sqlite3 writer must produce byte-identical rows to the SQLAlchemy types (money text, times)."""
    import sqlite3

    if not ledger_url.startswith("sqlite"):
        return
    usage = Usage(100, 20, 50, cache_write_tokens=30)
    cost = price_usage(usage, PRICE, VERSION, T0)
    for fast in (True, False):
        writer = SqlLedger(engine, replica_id=f"rep-{fast}", migrate=False, fast_sqlite=fast,
                           clock=lambda: T0 + timedelta(seconds=2, microseconds=5))
        await writer.start()
        e = replace(entry(f"req-{fast}", f"rep-{fast}"), started_at=T0 + timedelta(microseconds=7), api="responses")
        await writer.open(e)
        await writer.finish(replace(e, status="success", usage=usage, cost=cost,
                                    baseline_cost=Decimal("0.1234567890123456789012"), latency_ms=5), wait=True)
        await writer.stop()
    conn = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
    try:
        raw = {r[0]: r[1:] for r in conn.execute(
            "SELECT request_id, replica_id, started_at, finished_at, stream, typeof(stream), input_cost, "
            "total_cost_reporting, fx_rate, baseline_cost, money_scale, usage_source, status, api, "
            "cache_write_tokens, typeof(cache_write_tokens), cache_write_cost, cache_write_cost_reporting FROM ledger")}
        beats = dict(conn.execute("SELECT replica_id, typeof(heartbeat_at) || heartbeat_at FROM ledger_replicas"))
    finally:
        conn.close()
    fast_row, slow_row = raw["req-True"], raw["req-False"]
    assert fast_row[1:] == slow_row[1:], (fast_row, slow_row)
    assert fast_row[1] == "2026-11-01 00:00:00.000007" and fast_row[8] == "0.123456789012345678901200000"
    assert fast_row[12:] == ("responses", 30, "integer", "0.000075000000000000",
                             "0.000532500000000000")  # 30 tokens at 2.5 USD per 1M; x 7.10
    assert beats["rep-True"] == beats["rep-False"]
