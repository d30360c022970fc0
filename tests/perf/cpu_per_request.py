"""Gateway CPU per request, this tree against another (e.g. `main`), on the healthy path (issue 15: within 5 %).

    python -m tests.perf.cpu_per_request --base /tmp/base-tree [--requests 2000] [--rounds 3] [--concurrency 8]

Each round runs `gateway serve` from the base tree and from this tree in turn (the order alternates between
rounds), drives the same requests through each with an async httpx client, and reads the serving process's own
CPU time (utime + stime from /proc) before and after: CPU per request is the difference over the count. Two paths:
`embedded` (SQLite ledger, no Redis, no key) and `replica` (PostgreSQL ledger, Redis, a key with a budget and
rpm/tpm). The vendor is the asyncio stand-in in its own process (tests/perf/standin.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import clear_redis_prefix, demo_data, fresh_postgres, write_config
from tests.perf.proxies import PROVIDERS
from tests.perf.standin import AsyncioStandIn, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def drive(url: str, n: int, concurrency: int, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "deepseek-v2", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    ok = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def worker(count: int) -> None:
            nonlocal ok
            for _ in range(count):
                r = await c.post("/v1/chat/completions", json=body, headers=headers)
                ok += r.status_code == 200
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return ok


def measure(tree: Path, path: str, standin: int, work: Path, n: int, concurrency: int) -> float:
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(fresh_postgres()) if path == "replica" else None
        return _measure(tree, path, standin, work, n, concurrency, pg_url)


def _measure(tree: Path, path: str, standin: int, work: Path, n: int, concurrency: int, pg_url: str | None
             ) -> float:
    data = demo_data()
    g = data["gateway"]
    prefix = f"gw-cpu-{uuid.uuid4().hex[:8]}:"
    if pg_url is not None:
        g.update(ledger_url=pg_url, redis_url="redis://127.0.0.1:6379/0", redis_prefix=prefix,
                 require_api_key=True)
    else:
        g["ledger_url"] = f"sqlite:///{work / ('ledger-' + uuid.uuid4().hex[:6] + '.db')}"
    config = write_config(work / f"gateway-{path}.yaml", data)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    for p in PROVIDERS:
        env[f"DEMO_{p.upper()}_URL"] = f"http://127.0.0.1:{standin}/{p}/v1"
    port = free_port()
    # The tree on PYTHONPATH wins over the editable install this virtualenv points at (its finder comes last;
    # the working directory is `work`, so no tree is picked up from it).
    launch = "import sys; from gateway.cli import main; sys.argv[0] = 'gateway'; main()"
    proc = subprocess.Popen([sys.executable, "-c", launch, "serve", "--config", str(config), "--port", str(port)],
                            env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(port, "/readyz", timeout=90, proc=proc)
        url = f"http://127.0.0.1:{port}"
        key = None
        if path == "replica":
            r = httpx.post(url + "/admin/keys", headers={"Authorization": "Bearer demo-admin-key"},
                           json={"team": "bench", "budget": "100000", "budget_period": "day", "rpm": 10_000_000,
                                 "tpm": 1_000_000_000})
            key = r.json()["key"]
        asyncio.run(drive(url, 200, concurrency, key))  # warm-up
        before = cpu_s(proc.pid)
        ok = asyncio.run(drive(url, n, concurrency, key))
        used = cpu_s(proc.pid) - before
        if ok < n * 0.99:
            raise RuntimeError(f"only {ok} of {n} requests succeeded ({tree}, {path})")
        return used / ok * 1e6
    finally:
        proc.terminate()
        proc.wait(30)
        clear_redis_prefix(prefix)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="a checkout of the tree to compare against")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--paths", default="embedded,replica")
    args = ap.parse_args()
    standin = AsyncioStandIn()
    standin.start()
    work = Path(tempfile.mkdtemp(prefix="gw-cpu-"))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for path in args.paths.split(","):
            for r in range(args.rounds):
                order = [("base", args.base), ("this", ROOT)]
                for name, tree in order if r % 2 == 0 else reversed(order):
                    us = measure(tree, path, standin.port, work, args.requests, args.concurrency)
                    results.setdefault((path, name), []).append(us)
                    print(f"{path:9s} round {r + 1} {name:4s} {us:7.1f} us CPU/request", flush=True)
    finally:
        standin.stop()
    for path in args.paths.split(","):
        base, this = statistics.median(results[(path, "base")]), statistics.median(results[(path, "this")])
        print(f"{path:9s} median base {base:7.1f} us  this {this:7.1f} us  ratio {this / base:.3f}")


if __name__ == "__main__":
    main()
