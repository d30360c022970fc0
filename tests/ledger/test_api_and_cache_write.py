"""The ledger's `api` column and the `cache_write` direction, end to end on SQLite and PostgreSQL: the writer's
rows, the migration of a ledger that already has rows, reports grouped by api with exact sums and the contract's
CSV header, conversion at each row's own version, recovery and re-pricing."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import timedelta
from decimal import Context, Decimal, localcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, discover, upgrade
from gateway.decisions.pricing import price_usage
from gateway.domain import LedgerEntry, Price, PriceVersion, Usage
from gateway.ledger.queries import fetch_partials, stream_usage
from gateway.ledger.recovery import recover
from gateway.ledger.reports import Report, build_report, make_window, to_csv, to_json, to_table
from gateway.ledger.reprice import reprice
from gateway.ledger.tables import ledger
from gateway.ledger.writer import SqlLedger
from gateway.migrations import m0001_ledger
from tests.ledger.conftest import T0, insert_rows, row

D = Decimal
CONTRACT_HEADER = ("requests,input_tokens,cached_input_tokens,cache_write_tokens,output_tokens,input_cost,"
                   "cached_input_cost,cache_write_cost,output_cost,total_cost,baseline_cost,savings,currency")
SONNET = Price("USD", 1_000_000, D("3"), D("15"), cached_input=D("0.3"), cache_write=D("3.75"))
VERSION = PriceVersion(3, T0, "CNY", {"USD": D("7.10")}, {("anthropic", "claude-sonnet-4-5"): SONNET})


async def fetch(engine: AsyncEngine, request_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(ledger).where(ledger.c.request_id == request_id))).one()


async def report(engine: AsyncEngine, group_by: tuple[str, ...] = (), currency: str = "CNY",
                 fx: Any = None) -> Report:
    window = make_window("2026-11-01", "2026-12-01")
    return build_report(await fetch_partials(engine, window, group_by), window, group_by, currency, fx)


# ---- the writer ----------------------------------------------------------------------------------------------------


async def test_writer_records_the_api_and_cache_write_tokens_and_costs_exactly(engine: AsyncEngine,
                                                                                ledger_url: str) -> None:
    usage = Usage(100, 2_000, 50, cache_write_tokens=1_000)
    cost = price_usage(usage, SONNET, VERSION, T0)
    # SQLite: the stdlib fast path and the SQLAlchemy path must store the same row.
    for fast in ((True, False) if ledger_url.startswith("sqlite") else (False,)):
        writer = SqlLedger(engine, replica_id=f"rep-{fast}", migrate=False, fast_sqlite=fast, clock=lambda: T0)
        await writer.start()
        e = LedgerEntry(f"msg-{fast}", T0, "agents", "k1", "auto", "anthropic", "claude-sonnet-4-5",
                        "claude-sonnet-4-5-20250929", 3, f"rep-{fast}", 3_100, True, api="messages")
        await writer.open(e)
        opened = await fetch(engine, f"msg-{fast}")
        assert (opened.api, opened.cache_write_tokens, opened.cache_write_cost) == ("messages", 0, None)
        await writer.finish(replace(e, status="success", usage=usage, cost=cost), wait=True)
        await writer.stop()
        r = await fetch(engine, f"msg-{fast}")
        assert r.api == "messages"
        assert (r.input_tokens, r.cached_input_tokens, r.cache_write_tokens, r.output_tokens) == (100, 2_000, 1_000, 50)
        assert (r.input_cost, r.cached_input_cost, r.cache_write_cost, r.output_cost) == (
            D("0.0003"), D("0.0006"), D("0.00375"), D("0.00075"))
        assert r.total_cost == D("0.0054")
        assert r.cache_write_cost_reporting == D("0.026625")  # x 7.10
        assert r.total_cost_reporting == D("0.03834")
        assert r.total_cost_reporting == (r.input_cost_reporting + r.cached_input_cost_reporting
                                          + r.cache_write_cost_reporting + r.output_cost_reporting)


async def test_a_row_without_an_api_is_a_chat_completion_and_writes_no_cache(engine: AsyncEngine) -> None:
    writer = SqlLedger(engine, replica_id="rep", migrate=False, clock=lambda: T0)
    await writer.start()
    e = LedgerEntry("c1", T0, "t", None, "auto", "anthropic", "claude-sonnet-4-5", "claude", 3, "rep", 10, False)
    usage = Usage(10, 0, 1)
    await writer.open(e)
    await writer.finish(replace(e, status="success", usage=usage, cost=price_usage(usage, SONNET, VERSION, T0)),
                        wait=True)
    await writer.stop()
    r = await fetch(engine, "c1")
    assert (r.api, r.cache_write_tokens, r.cache_write_cost, r.cache_write_cost_reporting) == ("chat", 0, 0, 0)


# ---- the migration -------------------------------------------------------------------------------------------------


async def test_migration_5_gives_existing_rows_api_chat_and_zero_cache_writes(ledger_url: str) -> None:
    engine = create_engine(ledger_url)
    try:
        async with engine.begin() as conn:
            from gateway.db import _upgrade_sync

            applied = await conn.run_sync(_upgrade_sync, [m for m in discover() if m.version <= 4])
        assert applied == [1, 2, 3, 4]
        old: dict[str, Any] = {k: v for k, v in row("old-priced", T0, tokens=(1_000, 24, 10),
                                                      costs=("0.0008", "0.0000048", "0.00002"),
                                                      baseline="0.01").items()
                               if k in m0001_ledger.ledger.c}
        unpriced = {**old, "request_id": "old-open", "status": "in_flight", "finished_at": None,
                    **dict.fromkeys(("currency", "input_cost", "cached_input_cost", "output_cost", "total_cost",
                                     "reporting_currency", "fx_rate", "input_cost_reporting",
                                     "cached_input_cost_reporting", "output_cost_reporting", "total_cost_reporting",
                                     "baseline_cost"))}
        async with engine.begin() as conn:
            await conn.execute(m0001_ledger.ledger.insert(), [old, unpriced])
        applied = await upgrade(engine)
        assert applied[0] == 5 and all(v > 5 for v in applied[1:])  # 5, then any later migration
        assert await upgrade(engine) == []  # recorded: never applied twice
        priced, open_row = await fetch(engine, "old-priced"), await fetch(engine, "old-open")
        assert (priced.api, priced.cache_write_tokens, priced.cache_write_cost,
                priced.cache_write_cost_reporting) == ("chat", 0, D(0), D(0))
        assert (priced.input_tokens, priced.total_cost, priced.baseline_cost) == (1_000, D("0.0008248"), D("0.01"))
        # Column defaults, not an UPDATE (instant on a big ledger): an old unpriced row reads a 0 cost too.
        assert (open_row.api, open_row.cache_write_tokens, open_row.cache_write_cost) == ("chat", 0, D(0))
        if ledger_url.startswith("sqlite"):  # the zero is stored exactly as the ledger's own writers store one
            async with engine.connect() as conn:
                raw = (await conn.execute(sa.text(
                    "SELECT cache_write_cost, cache_write_cost_reporting FROM ledger "
                    "WHERE request_id = 'old-priced'"))).one()
            assert tuple(raw) == ("0." + "0" * 18,) * 2
        # A replica not yet upgraded (a rolling deploy) writes the old columns only: its rows read the same.
        async with engine.begin() as conn:
            await conn.execute(m0001_ledger.ledger.insert(), [{**old, "request_id": "old-writer"}])
        late = await fetch(engine, "old-writer")
        assert (late.api, late.cache_write_tokens, late.cache_write_cost_reporting) == ("chat", 0, D(0))
        async with engine.begin() as conn:
            await conn.execute(sa.delete(ledger).where(ledger.c.request_id == "old-writer"))
        rep = await report(engine, ("api",))
        assert [k for k, _ in rep.rows] == [("chat",)]
        line = rep.rows[0][1]
        assert (line.requests, line.cache_write_tokens, line.cache_write_cost, line.total_cost) == (
            2, 0, D(0), D("0.0008248"))
        await insert_rows(engine, [row("new", T0, api="messages", tokens=(1, 2, 3, 4), costs=("1", "2", "3", "4"))])
        assert [k for k, _ in (await report(engine, ("api",))).rows] == [("chat",), ("messages",)]
    finally:
        await engine.dispose()


# ---- reports -------------------------------------------------------------------------------------------------------

ROWS = [
    # (request id, api, price version, (input, cached, output, cache_write) tokens, their costs)
    ("r1", "chat", 1, (1_000, 0, 10, 0), ("0.0008", "0", "0.00002", "0")),
    ("r2", "messages", 1, (100, 2_000, 50, 1_000), ("0.0003", "0.0006", "0.00075", "0.00375")),
    ("r3", "messages", 1, (7, 0, 7, 3), ("0.0000056", "0", "0.000014", "0.0000000000000000000123")),  # 22 decimals
    ("r4", "responses", 2, (10, 5, 1, 2), ("0.00001", "0.0000005", "0.000002", "0.000003")),
    ("r5", "embeddings", 1, (64, 0, 0, 0), ("0.0000128", "0", "0", "0")),
]


async def _seed(engine: AsyncEngine) -> None:
    await insert_rows(engine, [row(rid, T0 + timedelta(hours=i), api=api, price_version=v, tokens=t, costs=c,
                                   baseline="0.01")
                               for i, (rid, api, v, t, c) in enumerate(ROWS)])


async def test_group_by_api_sums_every_direction_exactly(engine: AsyncEngine) -> None:
    await _seed(engine)
    rep = await report(engine, ("api",))
    by = dict(rep.rows)
    assert list(by) == [("chat",), ("embeddings",), ("messages",), ("responses",)]
    msg = by[("messages",)]
    assert (msg.requests, msg.input_tokens, msg.cached_input_tokens, msg.cache_write_tokens, msg.output_tokens) == (
        2, 107, 2_000, 1_003, 57)
    assert msg.cache_write_cost == D("0.0037500000000000000123")
    assert msg.total_cost == D("0.0054196000000000000123")
    assert msg.savings == D("0.02") - msg.total_cost
    assert by[("responses",)].cache_write_cost == D("0.000003")
    assert rep.total.cache_write_tokens == 1_005 and rep.total.requests == 5
    assert rep.total.cache_write_cost == D("0.0037530000000000000123")
    assert rep.total.total_cost == sum((ln.total_cost for _, ln in rep.rows), D(0))
    assert rep.total.total_cost == D("0.0062679000000000000123")
    assert rep.total.total_cost == (rep.total.input_cost + rep.total.cached_input_cost
                                    + rep.total.cache_write_cost + rep.total.output_cost)


async def test_report_formats_carry_the_contracts_columns(engine: AsyncEngine) -> None:
    await _seed(engine)
    rep = await report(engine, ("api", "team"))
    text = to_csv(rep)
    assert text.splitlines()[0] == "api,team," + CONTRACT_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["api"], r["cache_write_tokens"], r["cache_write_cost"]) for r in rows] == [
        ("chat", "0", "0"), ("embeddings", "0", "0"), ("messages", "1003", "0.0037500000000000000123"),
        ("responses", "2", "0.000003")]
    doc = json.loads(to_json(rep))
    assert doc["group_by"] == ["api", "team"]
    assert [r["api"] for r in doc["rows"]] == ["chat", "embeddings", "messages", "responses"]
    assert doc["total"]["cache_write_cost"] == "0.0037530000000000000123"
    assert list(doc["rows"][0]) == ["api", "team", *CONTRACT_HEADER.split(",")]
    table = to_table(rep).splitlines()
    assert table[0].split() == ["api", "team", *CONTRACT_HEADER.split(",")]
    assert table[-1].split()[:5] == ["TOTAL", "5", "1181", "2005", "1005"]


async def test_another_currency_converts_cache_writes_at_each_rows_own_version(engine: AsyncEngine) -> None:
    await _seed(engine)
    fx = {1: {"USD": D("7.10")}, 2: {"USD": D("7.20")}}
    rep = await report(engine, ("api",), "USD", fx.__getitem__)
    by = dict(rep.rows)
    divide = Context(prec=28).divide
    assert by[("responses",)].cache_write_cost == divide(D("0.000003"), D("7.20"))
    assert by[("messages",)].cache_write_cost == divide(D("0.0037500000000000000123"), D("7.10"))
    line = by[("messages",)]
    with localcontext(prec=100):  # the default 28 digits would round the check itself
        assert line.total_cost == line.input_cost + line.cached_input_cost + line.cache_write_cost + line.output_cost


async def test_many_tiny_cache_write_costs_sum_to_the_digit(engine: AsyncEngine) -> None:
    # 1 token at 3.75 USD per 1M x 7.10 = 0.000026625 CNY, 3,000 times.
    base = row("t", T0, api="messages", tokens=(0, 0, 0, 1), costs=("0", "0", "0", "0.000026625"))
    await insert_rows(engine, [{**base, "request_id": f"t{i}", "started_at": T0 + timedelta(seconds=i)}
                               for i in range(3_000)])
    (_, line), = (await report(engine, ("api",))).rows
    assert (line.cache_write_tokens, line.cache_write_cost, line.total_cost) == (3_000, D("0.079875"), D("0.079875"))


# ---- recovery and re-pricing ---------------------------------------------------------------------------------------


async def test_recovery_keeps_and_prices_the_cache_writes_a_row_recorded(engine: AsyncEngine) -> None:
    price = Price("CNY", 1000, D("0.0008"), D("0.002"), D("0.0002"), cache_write=D("0.001"))
    version = PriceVersion(1, T0, "CNY", {}, {("volcengine", "doubao-pro-32k"): price})
    await insert_rows(engine, [row("cut", T0, api="responses", replica_id="dead", status="in_flight",
                                   finished_at=None, usage_source=None, tokens=(12, 30, 0, 8))])
    closed = await recover(engine, T0 + timedelta(hours=1), 90.0, price_lookup={1: version}.get)
    assert closed == ["cut"]
    r = await fetch(engine, "cut")
    assert (r.status, r.api, r.input_tokens, r.cached_input_tokens, r.cache_write_tokens) == (
        "interrupted", "responses", 12, 30, 8)
    assert (r.input_cost, r.cached_input_cost, r.cache_write_cost) == (D("0.0000096"), D("0.000006"), D("0.000008"))
    assert r.total_cost == D("0.0000236")


async def test_reprice_prices_cache_writes_and_groups_by_api(engine: AsyncEngine) -> None:
    await _seed(engine)
    rows = [r async for r in stream_usage(engine, make_window("2026-11-01", "2026-12-01"))]
    assert {(r.api, r.cache_write_tokens) for r in rows} >= {("messages", 1_000), ("responses", 2)}
    # Writes at 1 CNY per 1K, every other direction free: the re-priced cost is the cache writes alone.
    writes_only = Price("CNY", 1000, D(0), D(0), D(0), cache_write=D(1))
    table = PriceVersion(9, T0, "CNY", {}, {("volcengine", "doubao-pro-32k"): writes_only})
    lines = dict(reprice(rows, table, ("api",)))
    assert lines[("messages",)].repriced_cost == D("1.003")
    assert lines[("responses",)].repriced_cost == D("0.002")
    assert lines[("chat",)].repriced_cost == 0
