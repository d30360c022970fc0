"""`make bench-replica` (`python -m tests.perf.run --replica-only`): the replica path beside the embedded one.

Issue 16. The same bench config (`config/demo.yaml`, model `auto`, the nginx stand-in, wrk, one worker) two ways:
  - embedded: SQLite ledger at a temporary file, no Redis, no client key (what `make bench` measures);
  - replica: a PostgreSQL ledger in a fresh database (created here, dropped at the end; 127.0.0.1:5432, trust auth,
    user postgres), Redis (127.0.0.1:6379, database BENCH_REDIS_DB with a key prefix of its own, its keys deleted
    at the end), `require_api_key: true` and a client key with a monthly budget and rpm/tpm limits, issued by the
    gateway's own CLI (`gateway keys create`).
Both run side by side and are measured in the same interleaved rounds (`harness.measure_interleaved`); the CPU per
request is the gateway process alone (PostgreSQL and Redis are other processes on the same cores).

Then, for the replica path alone at concurrency 1, what each request costs outside the interpreter: every system
call of the gateway process (`strace -f`) over N requests, minus an idle window of the same length (heartbeats,
health polls), with the writes on the PostgreSQL and Redis sockets counted separately (each is one request to
that server: round trips per request), and PostgreSQL's own count of committed transactions in the bench database.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.perf.harness import PY, ROOT, BenchError, Figures, Plan, Proxy, log, measure_interleaved, wrk
from tests.perf.proxies import chat_body, gateway_cmd, gateway_env, gateway_proxy
from tests.perf.standin import free_port

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = "postgresql://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "11"))
# Far above what a bench sends: any 429 would fail the run (wrk counts non-2xx as errors).
KEY_BUDGET, KEY_RPM, KEY_TPM = "1000000", 100_000_000, 1_000_000_000


async def _pg(sql: str, dsn: str = PG_ADMIN_DSN) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


class ReplicaBackends:
    """A fresh PostgreSQL database, a Redis key prefix, the replica config and a client key; all removed on exit."""

    def __init__(self, work: Path) -> None:
        tag = uuid.uuid4().hex[:10]
        self.db = f"gw_bench_{tag}"
        self.ledger_url = f"{PG_BASE}/{self.db}"
        self.prefix = f"gw-bench-{tag}:"
        self.redis_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
        self.config = work / "replica.yaml"
        self.key = ""
        self._created = False

    def __enter__(self) -> ReplicaBackends:
        asyncio.run(_pg(f'CREATE DATABASE "{self.db}"'))
        self._created = True
        try:
            self._write_config()
            self.key = self._create_key()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _write_config(self) -> None:
        text = (ROOT / "config" / "demo.yaml").read_text()
        for old, new in (("  redis_url: null\n",
                          f"  redis_url: {self.redis_url}\n  redis_prefix: '{self.prefix}'\n"),
                         ("  require_api_key: false\n", "  require_api_key: true\n")):
            if old not in text:
                raise BenchError(f"config/demo.yaml changed: {old.strip()!r} not found (tests/perf/replica.py)")
            text = text.replace(old, new)
        self.config.write_text(text)

    def env(self) -> dict[str, str]:
        return {**os.environ, "GATEWAY_LEDGER_URL": self.ledger_url}

    def _create_key(self) -> str:
        """Through the gateway's own CLI, as an operator would (it also migrates the fresh database)."""
        serve = gateway_cmd(0)
        cmd = [*serve[:serve.index("serve")], "keys", "create", "--config", str(self.config), "--team", "bench",
               "--budget", KEY_BUDGET, "--budget-period", "month", "--rpm", str(KEY_RPM), "--tpm", str(KEY_TPM)]
        res = subprocess.run(cmd, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=120)
        m = re.search(r"^key:\s+(\S+)", res.stdout, re.M)
        if res.returncode != 0 or m is None:
            raise BenchError(f"`gateway keys create` failed: {res.stdout[-400:]} {res.stderr[-800:]}")
        return m.group(1)

    def __exit__(self, *exc: Any) -> None:
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        try:
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.RedisError as e:
            log(f"could not delete the bench's Redis keys ({self.prefix}*): {e}")
        finally:
            client.close()
        if self._created:
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
            self._created = False

    def proxy(self, standin_port: int, work: Path) -> Proxy:
        port = free_port()
        cmd = gateway_cmd(port)
        cmd[cmd.index("--config") + 1] = str(self.config)
        env = {**gateway_env(standin_port, False, work / "unused.db"), "GATEWAY_LEDGER_URL": self.ledger_url}
        return Proxy("replica", cmd, env, port, "/healthz", work / "replica.log", bearer=self.key)

    def commits(self) -> int:
        rows = asyncio.run(_pg(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{self.db}'"))
        return int(rows[0]["xact_commit"]) if rows else 0


# --------------------------------------------------------------------------------------------- measurements

def paired(rep: list[Figures], emb: list[Figures], direct: list[dict[str, float]]) -> dict[str, float]:
    """replica / embedded per round (measured in the same minute), median over rounds."""
    def med(pairs: list[tuple[float, float]]) -> float:
        return statistics.median(x / y for x, y in pairs if y)

    return {
        "cpu_c1": med([(r.cpu_c1_ms, e.cpu_c1_ms) for r, e in zip(rep, emb)]),
        "cpu_c64": med([(r.cpu_ms, e.cpu_ms) for r, e in zip(rep, emb)]),
        "rps_c64": med([(r.rps, e.rps) for r, e in zip(rep, emb)]),
        "added_p50_c1": med([(r.p50_us - d["p50_us"], e.p50_us - d["p50_us"]) for r, e, d in zip(rep, emb, direct)]),
    }


def _socket_peers(pid: int) -> dict[int, int]:
    """fd -> remote TCP port, for every thread's sockets of `pid` (IPv4 loopback)."""
    inode_port: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    inode_port[parts[9]] = int(parts[2].rsplit(":", 1)[1], 16)
        except OSError:
            pass
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m and m.group(1) in inode_port:
            out[int(fd)] = inode_port[m.group(1)]
    return out


_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)(\d+)?")
_WRITES = ("write", "sendto", "sendmsg", "writev")


def _strace_window(pid: int, seconds: float, load: Any | None) -> tuple[collections.Counter[str], dict[int, int]]:
    """Every system call of the process (all threads) over a window, idle or under `load()`; and writes per fd."""
    out = Path(f"/tmp/gw-bench-strace-{pid}-{time.monotonic_ns()}.txt")
    proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(out), "-p", str(pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)  # attached to every thread
    result = None
    if load is not None:
        result = load()
    else:
        time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    calls: collections.Counter[str] = collections.Counter()
    writes: dict[int, int] = collections.Counter()
    with open(out) as f:
        for line in f:
            if "resumed>" in line:
                continue  # counted at its start
            m = _CALL.match(line)
            if m is None:
                continue
            calls[m.group(1)] += 1
            if m.group(1) in _WRITES and m.group(2):
                writes[int(m.group(2))] += 1
    out.unlink(missing_ok=True)
    calls["__requests__"] = result["requests"] if result else 0
    return calls, writes


def round_trips(backends: ReplicaBackends, standin_port: int, wrk_bin: str, body: Path, work: Path,
                seconds: int = 4) -> dict[str, Any]:
    """Per request of the replica path at c1: system calls, writes to PostgreSQL and to Redis (round trips), and
    committed transactions in the bench database; each minus an idle window of the same length."""
    if shutil.which("strace") is None:
        return {"note": "strace not installed (apt-get install strace): system calls and round trips not counted"}
    proxy = backends.proxy(standin_port, work)
    url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
    with proxy:
        wrk(wrk_bin, url, body, 8, 2, "replica warm-up", proxy.bearer)
        peers = _socket_peers(proxy.pid)
        c0 = backends.commits()
        idle, idle_w = _strace_window(proxy.pid, seconds + 1.0, None)  # +1 s: the loaded window's attach pause
        c1 = backends.commits()
        time.sleep(1.5)
        c1 = backends.commits()
        busy, busy_w = _strace_window(proxy.pid, 0, lambda: wrk(wrk_bin, url, body, 1, seconds, "replica strace c1",
                                                                proxy.bearer))
        time.sleep(1.5)  # PostgreSQL publishes a backend's counters within a second of its transaction
        c2 = backends.commits()
        peers.update(_socket_peers(proxy.pid))
    n = busy["__requests__"]
    per_call = {k: (busy[k] - idle.get(k, 0)) / n for k in busy if k != "__requests__"}
    per_call = {k: v for k, v in sorted(per_call.items(), key=lambda kv: -kv[1]) if v >= 0.05}

    def to(port: int) -> float:
        b = sum(c for fd, c in busy_w.items() if peers.get(fd) == port)
        i = sum(c for fd, c in idle_w.items() if peers.get(fd) == port)
        return (b - i) / n

    return {"requests": n, "syscalls": per_call, "total_syscalls": sum(per_call.values()),
            "pg_writes": to(5432), "redis_writes": to(REDIS_PORT),
            "pg_commits": ((c2 - c1) - (c1 - c0)) / n, "strace_note": "strace slows the process: counts only"}


def replica_bench(stand_port: int, wrk_bin: str, work: Path, plan: Plan, *, strace: bool = True) -> dict[str, Any]:
    body = work / "replica-body.json"
    body.write_bytes(chat_body("auto", False))
    direct_url = f"http://127.0.0.1:{stand_port}/direct/v1/chat/completions"
    res: dict[str, Any] = {}
    with ReplicaBackends(work) as backends:
        embedded = gateway_proxy(stand_port, False, work)
        embedded.name = "embedded"
        runs, direct = measure_interleaved([embedded, backends.proxy(stand_port, work)], direct_url, wrk_bin, body,
                                           False, plan)
        res["embedded"], res["replica"] = runs["embedded"], runs["replica"]
        res["direct_p50_us"] = statistics.median(d["p50_us"] for d in direct)
        res["paired"] = paired(runs["replica"], runs["embedded"], direct)
        if strace:
            res["trips"] = round_trips(backends, stand_port, wrk_bin, body, work)
    return res


def _med(rounds: list[Figures], name: str) -> float:
    return statistics.median(getattr(r, name) for r in rounds)


def render_replica(res: dict[str, Any], plan: Plan) -> str:
    lines = ["Replica path (issue 16): PostgreSQL ledger, Redis, required key with budget and rpm/tpm; beside the "
             "embedded path (SQLite, no Redis, no key). Non-streamed, model auto, one worker each.",
             f"{plan.rounds} interleaved round(s): c1 {plan.c1_s}s, c64 {plan.c64_s}s; medians; ratios are the "
             "median of per-round ratios. CPU: the gateway process alone.", "",
             f"{'':<10} {'CPU ms/req c1':>14} {'CPU ms/req c64':>15} {'added p50 c1 us':>16} {'req/s c64':>10}"]
    d = res["direct_p50_us"]
    for name in ("embedded", "replica"):
        r = res[name]
        lines.append(f"{name:<10} {_med(r, 'cpu_c1_ms'):>14.3f} {_med(r, 'cpu_ms'):>15.3f} "
                     f"{_med(r, 'p50_us') - d:>16.0f} {_med(r, 'rps'):>10.0f}")
    p = res["paired"]
    lines += ["", "Targets (issue 16; measured, not asserted):",
              f"- replica CPU/request vs embedded at c1:  {p['cpu_c1']:.2f}x (target <= 1.5x)",
              f"- replica CPU/request vs embedded at c64: {p['cpu_c64']:.2f}x (target <= 1.5x)",
              f"- replica req/s at c64 vs embedded:       {p['rps_c64']:.2f}x (target >= 0.8x)",
              f"- (replica added p50 at c1 vs embedded:    {p['added_p50_c1']:.2f}x)"]
    t = res.get("trips")
    if t:
        if "note" in t:
            lines += ["", t["note"]]
        else:
            lines += ["", f"Replica path per request at c1 ({t['requests']} requests under strace -f, minus an idle "
                          "window of the same length):",
                      f"- round trips: PostgreSQL {t['pg_writes']:.2f} (socket writes), Redis {t['redis_writes']:.2f}"
                      f" (socket writes); PostgreSQL transactions committed: {t['pg_commits']:.2f}",
                      f"- system calls: {t['total_syscalls']:.1f}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in t["syscalls"].items())]
    lines.append(f"\n(load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
                 f"{os.cpu_count()} cores)")
    return "\n".join(lines)


__all__ = ["PY", "ReplicaBackends", "render_replica", "replica_bench", "round_trips"]
