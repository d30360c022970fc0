"""Ledger benchmarks (not part of the test suite): group-commit write rate and the 1M-row month report.

    .venv/bin/python tests/perf/bench_ledger.py [--rows 1000000] [--requests 20000] [--concurrency 200]
        [--backends sqlite,postgresql] [--what writes,latency,report] [--latency-requests 2000]
        [--pg postgresql://postgres@127.0.0.1:5432/test]

Write rate: `--requests` simulated requests, `--concurrency` at a time, each doing what the request path does:
`open` (waits until durable) then `finish(wait=True)` (a non-streaming response waits for its row). Reported as
completed rows/s and transactions used. Report: a month of `--rows` rows (in time order, as the ledger fills),
seeded with the database's bulk path, then `gateway report` over the month grouped by team,provider,model and by
day; best of three.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.db import create_engine, upgrade  # noqa: E402
from gateway.decisions.pricing import price_usage  # noqa: E402
from gateway.domain import LedgerEntry, Price, PriceVersion, Usage  # noqa: E402
from gateway.ledger.queries import fetch_partials  # noqa: E402
from gateway.ledger.reports import build_report, make_window  # noqa: E402
from gateway.ledger.tables import cost_columns, ledger, money_text  # noqa: E402
from gateway.ledger.writer import SqlLedger  # noqa: E402

MONTH = datetime(2026, 11, 1, tzinfo=timezone.utc)
PRICES = {
    ("volcengine", "doubao-pro-32k"): Price("CNY", 1000, Decimal("0.0008"), Decimal("0.002")),
    ("dashscope", "qwen-long"): Price("CNY", 1000, Decimal("0.0005"), Decimal("0.002")),
    ("deepseek", "deepseek-v2"): Price("CNY", 1000, Decimal("0.001"), Decimal("0.002"), Decimal("0.0001")),
    ("zhipu", "glm-3-turbo"): Price("CNY", 1000, Decimal("0.001"), Decimal("0.001")),
    ("hunyuan", "hunyuan-standard"): Price("CNY", 1000, Decimal("0.0045"), Decimal("0.005")),
    ("qianfan", "ernie-speed-128k"): Price("CNY", 1000, Decimal(0), Decimal(0)),
    ("openai", "gpt-4o"): Price("USD", 1_000_000, Decimal("2.5"), Decimal("10"), Decimal("1.25")),
    ("openai", "gpt-4o-mini"): Price("USD", 1_000_000, Decimal("0.15"), Decimal("0.6"), Decimal("0.075")),
}
VERSION = PriceVersion(1, MONTH, "CNY", {"USD": Decimal("7.1234")}, PRICES)
DEPLOYMENTS = list(PRICES)
TEAMS = [f"team-{i:02d}" for i in range(20)]
APIS = ("chat", "chat", "responses", "messages", "embeddings")


def entry(i: int, replica: str) -> LedgerEntry:
    provider, model = DEPLOYMENTS[i % len(DEPLOYMENTS)]
    return LedgerEntry(f"bench-{uuid.uuid4().hex}", datetime.now(timezone.utc), TEAMS[i % 20], f"key-{i % 50}",
                       "auto", provider, model, model, 1, replica, 500, False)


def finished(e: LedgerEntry, rnd: random.Random) -> LedgerEntry:
    usage = Usage(rnd.randint(10, 4000), rnd.choice((0, 0, 128)), rnd.randint(1, 800))
    cost = price_usage(usage, PRICES[(e.provider, e.model)], VERSION, e.started_at)
    base = price_usage(usage, PRICES[("openai", "gpt-4o")], VERSION, e.started_at).total_reporting
    return replace(e, status="success", usage=usage, cost=cost, baseline_cost=base, latency_ms=300)


async def bench_writes(url: str, requests: int, concurrency: int) -> None:
    engine = create_engine(url, pool_size=5)
    writer = SqlLedger(engine, replica_id=f"bench-{os.getpid()}")
    await writer.start()
    rnd = random.Random(1)
    sem = asyncio.Semaphore(concurrency)
    # Prepared up front: the figures are the ledger's, not the benchmark's pricing.
    work = [(e, finished(e, rnd)) for e in (entry(i, writer.replica_id) for i in range(requests))]

    async def one(i: int) -> None:
        async with sem:
            e, done = work[i]
            await writer.open(e)
            await asyncio.sleep(0)  # the vendor call: a request always awaits between its two writes
            await writer.finish(done, wait=True)

    cpu0 = time.thread_time()  # the event loop's thread: what the request path pays
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - t0
    loop_cpu = time.thread_time() - cpu0
    tx = writer.transactions
    await writer.stop()
    await engine.dispose()
    print(f"  writes: {requests} requests (open + finish, both waited) at concurrency {concurrency}: "
          f"{requests / elapsed:,.0f} rows/s, {2 * requests / elapsed:,.0f} writes/s, "
          f"{tx} transactions ({2 * requests / max(tx, 1):.0f} writes each), "
          f"event-loop CPU {loop_cpu / requests * 1e6:,.0f} us per request")


async def bench_latency(url: str, requests: int) -> None:
    """One request at a time: the latency an `open` + `finish(wait=True)` pair adds to a request."""
    engine = create_engine(url, pool_size=5)
    writer = SqlLedger(engine, replica_id=f"bench-lat-{os.getpid()}")
    await writer.start()
    rnd = random.Random(2)
    times = []
    for i in range(requests):
        e = entry(i, writer.replica_id)
        done = finished(e, rnd)
        t0 = time.perf_counter()
        await writer.open(e)
        await writer.finish(done, wait=True)
        times.append(time.perf_counter() - t0)
    await writer.stop()
    await engine.dispose()
    times.sort()
    us = [t * 1e6 for t in times]
    print(f"  latency of open + finish(wait) at concurrency 1 over {requests}: "
          f"p50 {us[len(us) // 2]:,.0f} us, p99 {us[int(len(us) * 0.99)]:,.0f} us, "
          f"mean {sum(us) / len(us):,.0f} us")


def month_rows(n: int, chunk: int = 50_000):  # type: ignore[no-untyped-def]
    """Rows spread over November in time order, priced like real traffic; yields lists of column dicts."""
    rnd = random.Random(7)
    step = timedelta(days=30) / n
    rows = []
    for i in range(n):
        provider, model = DEPLOYMENTS[rnd.randrange(len(DEPLOYMENTS))]
        usage = Usage(rnd.randint(10, 4000), rnd.choice((0, 0, 128)), rnd.randint(1, 800))
        at = MONTH + step * i
        cost = price_usage(usage, PRICES[(provider, model)], VERSION, at)
        base = price_usage(usage, PRICES[("openai", "gpt-4o")], VERSION, at).total_reporting
        rows.append({
            "request_id": f"m-{i}", "started_at": at, "finished_at": at, "replica_id": "seed",
            "team": TEAMS[rnd.randrange(20)], "key_id": f"key-{rnd.randrange(50)}", "route": "auto",
            "provider": provider, "model": model, "upstream_model": model, "price_version": 1, "stream": True,
            "prompt_tokens_estimate": usage.prompt_tokens, "input_tokens": usage.input_tokens,
            "cached_input_tokens": usage.cached_input_tokens, "output_tokens": usage.output_tokens,
            "cache_write_tokens": usage.cache_write_tokens, "api": APIS[i % len(APIS)],
            "usage_source": "provider", "status": "success", "attempts": 1, "latency_ms": 300, "ttft_ms": 80,
            "error_kind": None, **cost_columns(cost, base),
        })
        if len(rows) == chunk:
            yield rows
            rows = []
    if rows:
        yield rows


COLUMNS = [c.name for c in ledger.columns if c.name != "id"]
MONEY = {c.name for c in ledger.columns if c.type.__class__.__name__ == "Money"}


async def seed(url: str, n: int) -> float:
    """Bulk-load with the driver's fastest path (sqlite3 executemany / asyncpg COPY)."""
    t0 = time.perf_counter()
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        sql = f"INSERT INTO ledger ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"
        for chunk in month_rows(n):
            conn.executemany(sql, [tuple(
                (money_text(r[c]) if r[c] is not None else None) if c in MONEY else
                (r[c].astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
                 if isinstance(r[c], datetime) else r[c]) for c in COLUMNS) for r in chunk])
        conn.commit()
        conn.close()
    else:
        conn = await asyncpg.connect(url)
        for chunk in month_rows(n):
            await conn.copy_records_to_table("ledger", records=[tuple(r[c] for c in COLUMNS) for r in chunk],
                                             columns=COLUMNS)
        await conn.execute("ANALYZE ledger")
        await conn.close()
    return time.perf_counter() - t0


async def bench_report(url: str, n: int) -> None:
    engine = create_engine(url)
    await upgrade(engine)
    print(f"  seeding {n:,} rows ...", flush=True)
    print(f"  seeded in {await seed(url, n):.1f}s")
    window = make_window("2026-11-01", "2026-12-01")
    for group_by in (("team", "provider", "model"), ("day",), ()):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            rep = build_report(await fetch_partials(engine, window, group_by), window, group_by, "CNY")
            best = min(best, time.perf_counter() - t0)
        print(f"  month report over {rep.total.requests:,} rows, group by {','.join(group_by) or '(none)'}: "
              f"{best:.2f}s best of 3 ({len(rep.rows)} rows, total {rep.total.total_cost} CNY)")
    await engine.dispose()


async def pg_database(admin_url: str) -> tuple[str, str]:
    name = f"gw_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


async def drop_pg(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--latency-requests", type=int, default=2000)
    ap.add_argument("--what", default="writes,latency,report", help="any of writes, latency, report")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    whats = args.what.split(",")
    for backend in args.backends.split(","):
        print(f"{backend}:")
        for what in whats:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{tmp}/{what}.db"
                    await run_one(what, url, args)
            else:
                name, url = await pg_database(args.pg)
                try:
                    await run_one(what, url, args)
                finally:
                    await drop_pg(args.pg, name)


async def run_one(what: str, url: str, args: argparse.Namespace) -> None:
    if what == "writes":
        await bench_writes(url, args.requests, args.concurrency)
    elif what == "latency":
        await bench_latency(url, args.latency_requests)
    elif what == "report":
        await bench_report(url, args.rows)
    else:
        raise SystemExit(f"unknown benchmark {what!r}")


if __name__ == "__main__":
    asyncio.run(main())
