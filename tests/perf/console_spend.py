"""How long the console's spend page takes over a month of a 1,000,000-row SQLite ledger.

    .venv/bin/python -m tests.perf.console_spend [--rows 1000000] [--db /tmp/console-perf/ledger.db] [--runs 5]

Builds the ledger once (schema by the real migrations; rows in the real storage format: money as `money_text`,
times as SQLite stores them) spread over November 2026, 8 providers x 10 models x 6 teams x 3 routes, two price
versions, a baseline on most rows. Then starts the real app (`create_app` under uvicorn on loopback) on that ledger,
waits for its background roller to roll up the 30 closed days (printing how long that took), signs in to the console
and times `GET /console/spend` for the month (chart by day stacked by provider, table by provider; by team and
model; filtered to one provider) and the CSV download, printing each run's wall time. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx

from gateway.ledger.tables import BASE_SCALE, money_text

PROVIDERS = ("volcengine", "dashscope", "qianfan", "zhipu", "deepseek", "hunyuan", "moonshot", "openai")
TEAMS = ("search", "support", "finance", "ads", "research", "default")
ROUTES = ("auto", "premium", "cheap")
ADMIN = "perf-admin-key"


def build(path: Path, rows: int, seed: int = 7) -> None:
    from gateway.db import create_engine, upgrade

    async def migrate() -> None:
        engine = create_engine(f"sqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    rnd = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    step = timedelta(days=30) / rows
    conn = sqlite3.connect(path)
    cols = ("request_id", "started_at", "finished_at", "replica_id", "team", "key_id", "route", "provider", "model",
            "upstream_model", "price_version", "stream", "prompt_tokens_estimate", "input_tokens",
            "cached_input_tokens", "output_tokens", "currency", "input_cost", "cached_input_cost", "output_cost",
            "total_cost", "reporting_currency", "fx_rate", "input_cost_reporting", "cached_input_cost_reporting",
            "output_cost_reporting", "total_cost_reporting", "baseline_cost", "money_scale", "usage_source",
            "status", "attempts", "latency_ms", "ttft_ms")
    sql = f"INSERT INTO ledger ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    per_k = Decimal("0.001")
    batch = []
    for i in range(rows):
        t = start + step * i
        ts = t.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        provider = PROVIDERS[rnd.randrange(8)]
        model = f"{provider}-m{rnd.randrange(10)}"
        inp, cached, out = rnd.randrange(20, 4000), rnd.randrange(0, 200), rnd.randrange(10, 800)
        ci, cc, co = (Decimal(inp) * per_k / 1000, Decimal(cached) * per_k / 4000, Decimal(out) * per_k * 2 / 1000)
        total = ci + cc + co
        m = [money_text(x) for x in (ci, cc, co, total)]
        baseline = money_text(total * 3) if rnd.random() < 0.9 else None
        batch.append((f"perf-{i}", ts, ts, "perf", TEAMS[rnd.randrange(6)], f"k{rnd.randrange(40)}",
                      ROUTES[rnd.randrange(3)], provider, model, model, 1 + (i * 2 >= rows), 0, inp + cached, inp,
                      cached, out, "CNY", *m, "CNY", money_text(Decimal(1)), *m, baseline, BASE_SCALE, "provider",
                      "success", 1, 300, None))
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            batch.clear()
    conn.executemany(sql, batch)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def serve(path: Path) -> tuple[str, threading.Thread, object]:
    import uvicorn

    from gateway.config.load import load_config_data
    from gateway.server import uvicorn_config

    data = {"gateway": {"ledger_url": f"sqlite:///{path}", "admin_key": ADMIN, "reporting_currency": "CNY"},
            "providers": {"p": {"api_base": "http://127.0.0.1:9/v1"}},
            "deployments": [{"provider": "p", "model": "m", "context_window": 8000, "quality": 50,
                             "price": {"currency": "CNY", "per": "1K", "input": "0.001", "output": "0.002"}}]}
    cfg = uvicorn_config(load_config_data(data, "perf"), "127.0.0.1", 0, log_level="warning")
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", thread, server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/console-perf/ledger.db")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    path = Path(args.db)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build(path, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - t0:.1f} s: {path}")
    t0 = time.perf_counter()
    url, thread, server = serve(path)
    days = 0
    while days < 30:  # `gateway serve` rolls up the closed days in the background (gateway/ledger/rollup.py)
        time.sleep(0.5)
        with sqlite3.connect(path) as conn:
            days = conn.execute("SELECT count(*) FROM ledger_rollup_days WHERE row_count > 0").fetchone()[0]
    print(f"server up and 30 days rolled up after {time.perf_counter() - t0:.1f} s")
    client = httpx.Client(base_url=url, timeout=120)
    client.post("/console/login", data={"admin_key": ADMIN})
    month = "from=2026-11-01&to=2026-12-01"
    pages = {
        "spend (stack provider, table provider)": f"/console/spend?{month}&stack=provider&group_by=provider",
        "spend (stack team, table team,model)": f"/console/spend?{month}&stack=team&group_by=team,model",
        "spend (filter provider=deepseek)": f"/console/spend?{month}&stack=model&group_by=model&provider=deepseek",
        "spend.csv (table by day,provider)": f"/console/spend.csv?{month}&group_by=day,provider",
    }
    for name, target in pages.items():
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = client.get(target)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, (r.status_code, r.text[:300])
        print(f"{name:<42} median {statistics.median(times):.3f} s  max {max(times):.3f} s  "
              f"runs {' '.join(f'{t:.3f}' for t in times)}")
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
