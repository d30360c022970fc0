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

from tests.perf.harness import (PY, ROOT, BenchError, Figures, Plan, Proxy, cpu_seconds, log, measure_interleaved,
                                wrk)
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

    def proxy(self, standin_port: int, work: Path, patches: str | None = None) -> Proxy:
        """The replica gateway; with `patches`, under tests/perf/proposals/serve_patched.py (an A/B variant)."""
        port = free_port()
        cmd = gateway_cmd(port, patches)
        cmd[cmd.index("--config") + 1] = str(self.config)
        env = {**gateway_env(standin_port, False, work / "unused.db"), "GATEWAY_LEDGER_URL": self.ledger_url}
        name = "replica" if patches is None else f"replica+{patches}"
        return Proxy(name, cmd, env, port, "/healthz", work / f"{name}.log", bearer=self.key)

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


def _monitor(seconds_hint: float) -> tuple[subprocess.Popen[bytes], Path]:
    out = Path(f"/tmp/gw-bench-monitor-{os.getpid()}-{time.monotonic_ns()}.txt")
    cli = shutil.which("redis-cli")
    if cli is None:
        raise FileNotFoundError("redis-cli")
    proc = subprocess.Popen([cli, "-h", REDIS_HOST, "-p", str(REDIS_PORT), "monitor"], stdout=open(out, "wb"),
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, out


_MON = re.compile(r'^\S+ \[(\d+) ([^\]]+)\] "([^"]+)"(.*)$')


def _redis_commands(path: Path, prefix: str) -> collections.Counter[str]:
    """What the bench's clients sent to its Redis database (MONITOR lines), by command and key shape; Lua's own
    calls (`[db lua]`) are not round trips and are left out."""
    out: collections.Counter[str] = collections.Counter()
    with open(path, errors="replace") as f:
        for line in f:
            m = _MON.match(line)
            if m is None or int(m.group(1)) != REDIS_DB or m.group(2) == "lua":
                continue
            args = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(4))
            key = next((a for a in args if a.startswith(prefix)), "")
            shape = re.sub(r"gw-[0-9a-f]{32}", "<request>", key[len(prefix):])
            shape = re.sub(r":[0-9a-f]{12,}", ":<id>", shape)
            out[f"{m.group(3).upper()} {shape}".strip()] += 1
    return out


def _count(proxy: Proxy, wrk_bin: str, body: Path, seconds: int, monitor_prefix: str | None,
           commits: Any | None) -> dict[str, Any]:
    """Per request at c1: system calls (all threads), writes per remote port, Redis commands, PostgreSQL commits;
    each minus an idle window of the same length."""
    url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
    with proxy:
        wrk(wrk_bin, url, body, 8, 2, f"{proxy.name} warm-up", proxy.bearer)
        peers = _socket_peers(proxy.pid)
        c0 = commits() if commits else 0
        idle, idle_w = _strace_window(proxy.pid, seconds + 1.0, None)  # +1 s: the loaded window's attach pause
        time.sleep(1.5)  # PostgreSQL publishes a backend's counters within a second of its transaction
        c1 = commits() if commits else 0
        mon = _monitor(seconds) if monitor_prefix else None
        busy, busy_w = _strace_window(proxy.pid, 0, lambda: wrk(wrk_bin, url, body, 1, seconds,
                                                                f"{proxy.name} strace c1", proxy.bearer))
        if mon is not None:
            mon[0].send_signal(signal.SIGINT)
            mon[0].wait(10)
        time.sleep(1.5)
        c2 = commits() if commits else 0
        peers.update(_socket_peers(proxy.pid))
        if commits:  # the same at c64 (no strace): how well group commit batches
            r64 = wrk(wrk_bin, url, body, 64, seconds, f"{proxy.name} commits c64", proxy.bearer)
            time.sleep(1.5)
            c3 = commits()
    n = busy["__requests__"]
    per_call = {k: (busy[k] - idle.get(k, 0)) / n for k in busy if k != "__requests__"}
    per_call = {k: v for k, v in sorted(per_call.items(), key=lambda kv: -kv[1]) if v >= 0.05}

    def to(port: int) -> float:
        b = sum(c for fd, c in busy_w.items() if peers.get(fd) == port)
        i = sum(c for fd, c in idle_w.items() if peers.get(fd) == port)
        return (b - i) / n

    out: dict[str, Any] = {"requests": n, "syscalls": per_call, "total_syscalls": sum(per_call.values()),
                           "pg_writes": to(5432), "redis_writes": to(REDIS_PORT)}
    if commits:
        out["pg_commits"] = ((c2 - c1) - (c1 - c0)) / n
        out["pg_commits_c64"] = ((c3 - c2) - (c1 - c0)) / r64["requests"]
    if mon is not None and monitor_prefix:
        cmds = _redis_commands(mon[1], monitor_prefix)
        mon[1].unlink(missing_ok=True)
        out["redis_commands"] = {k: v / n for k, v in cmds.most_common() if v / n >= 0.05}
    return out


def round_trips(backends: ReplicaBackends, standin_port: int, wrk_bin: str, body: Path, work: Path,
                seconds: int = 4) -> dict[str, Any]:
    """Per request at c1, embedded and replica path: system calls, writes to PostgreSQL and to Redis (round trips),
    the Redis commands (MONITOR; not round trips: a pipeline is one), committed transactions in the bench
    database. strace slows the process down: these are counts, not times."""
    if shutil.which("strace") is None:
        return {"note": "strace not installed (apt-get install strace): system calls and round trips not counted"}
    embedded = gateway_proxy(standin_port, False, work)
    embedded.name = "embedded"
    return {"embedded": _count(embedded, wrk_bin, body, seconds, None, None),
            "replica": _count(backends.proxy(standin_port, work), wrk_bin, body, seconds, backends.prefix,
                              backends.commits)}


def stage_profile(backends: ReplicaBackends, standin_port: int, wrk_bin: str, body: Path, work: Path,
                  seconds: int = 6, ab: str | None = None) -> dict[str, Any]:
    """CPU per request of each awaited stage (serving thread, tests/perf/proposals/serve_patched.py `stages`), at
    concurrency 1 only (warm-up included), embedded and replica path; and the process's whole CPU per request."""
    import json

    out: dict[str, Any] = {}
    for name in ("embedded", "replica", *((f"replica+{ab}",) if ab is not None else ())):
        port = free_port()
        cmd = gateway_cmd(port, "stages" if name == "embedded" else ",".join(["stages", *name.split("+")[1:]]).rstrip(","))
        dump = work / f"stages-{name}.json"
        if name != "embedded":
            cmd[cmd.index("--config") + 1] = str(backends.config)
            env = {**gateway_env(standin_port, False, work / "unused.db"), "GATEWAY_LEDGER_URL": backends.ledger_url}
            bearer: str | None = backends.key
        else:
            env, bearer = gateway_env(standin_port, False, work / f"stages-{port}.db"), None
        env["BENCH_STAGES_OUT"] = str(dump)
        proxy = Proxy(f"{name}+stages", cmd, env, port, "/healthz", work / "stages.log", bearer=bearer)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with proxy:
            n = wrk(wrk_bin, url, body, 1, 2, f"{name} stages warm-up", bearer)["requests"]
            before = cpu_seconds(proxy.pid)
            r = wrk(wrk_bin, url, body, 1, seconds, f"{name} stages c1", bearer)
            cpu_ms = (cpu_seconds(proxy.pid) - before) * 1000 / r["requests"]
        data = json.loads(dump.read_text())
        total = n + r["requests"]
        out[name] = {"cpu_ms": cpu_ms, "requests": total,
                     "stages_us": {k: v[0] * 1e6 / total for k, v in data["stages"].items() if v[1]}}
    return out


def replica_bench(stand_port: int, wrk_bin: str, work: Path, plan: Plan, *, strace: bool = True,
                  stages: bool = False, ab: str | None = None) -> dict[str, Any]:
    """With `ab` (serve_patched patches): that variant of the replica gateway measured in the same rounds too."""
    body = work / "replica-body.json"
    body.write_bytes(chat_body("auto", False))
    direct_url = f"http://127.0.0.1:{stand_port}/direct/v1/chat/completions"
    res: dict[str, Any] = {}
    with ReplicaBackends(work) as backends:
        embedded = gateway_proxy(stand_port, False, work)
        embedded.name = "embedded"
        proxies = [embedded, backends.proxy(stand_port, work)]
        if ab is not None:
            proxies.append(backends.proxy(stand_port, work, ab))
        runs, direct = measure_interleaved(proxies, direct_url, wrk_bin, body, False, plan)
        res["embedded"], res["replica"] = runs["embedded"], runs["replica"]
        res["direct_p50_us"] = statistics.median(d["p50_us"] for d in direct)
        res["paired"] = paired(runs["replica"], runs["embedded"], direct)
        if ab is not None:
            res["ab"] = {"name": f"replica+{ab}", "runs": runs[f"replica+{ab}"],
                         "paired": paired(runs["replica"], runs[f"replica+{ab}"], direct)}
        if strace:
            res["trips"] = round_trips(backends, stand_port, wrk_bin, body, work)
        if stages:
            res["stages"] = stage_profile(backends, stand_port, wrk_bin, body, work, ab=ab)
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
    ab = res.get("ab")
    if ab:
        r = ab["runs"]
        lines.append(f"{ab['name']:<10} {_med(r, 'cpu_c1_ms'):>14.3f} {_med(r, 'cpu_ms'):>15.3f} "
                     f"{_med(r, 'p50_us') - d:>16.0f} {_med(r, 'rps'):>10.0f}")
        q = ab["paired"]
        lines += ["", f"A/B, replica / {ab['name']} (median of per-round ratios): CPU c1 {q['cpu_c1']:.2f}x, "
                      f"CPU c64 {q['cpu_c64']:.2f}x, req/s c64 {q['rps_c64']:.2f}x, added p50 c1 {q['added_p50_c1']:.2f}x"]
    p = res["paired"]
    lines += ["", "Targets (issue 16; measured, not asserted):",
              f"- replica CPU/request vs embedded at c1:  {p['cpu_c1']:.2f}x (target <= 1.5x)",
              f"- replica CPU/request vs embedded at c64: {p['cpu_c64']:.2f}x (target <= 1.5x)",
              f"- replica req/s at c64 vs embedded:       {p['rps_c64']:.2f}x (target >= 0.8x)",
              f"- (replica added p50 at c1 vs embedded:    {p['added_p50_c1']:.2f}x)"]
    t = res.get("trips")
    if t and "note" in t:
        lines += ["", t["note"]]
    elif t:
        r, e = t["replica"], t["embedded"]
        lines += ["", f"Per request at c1 under strace -f ({r['requests']} replica, {e['requests']} embedded requests, "
                      "minus an idle window of the same length; counts, not times):",
                  f"- round trips (socket writes): PostgreSQL {r['pg_writes']:.2f}, Redis {r['redis_writes']:.2f}; "
                  f"PostgreSQL transactions committed {r.get('pg_commits', 0):.2f} (at c64, no strace: "
                  f"{r.get('pg_commits_c64', 0):.3f})",
                  "- Redis commands: " + ", ".join(f"{k} {v:.2f}" for k, v in r.get("redis_commands", {}).items()),
                  f"- system calls, replica {r['total_syscalls']:.1f}: " +
                  ", ".join(f"{k} {v:.1f}" for k, v in r["syscalls"].items()),
                  f"- system calls, embedded {e['total_syscalls']:.1f}: " +
                  ", ".join(f"{k} {v:.1f}" for k, v in e["syscalls"].items())]
    st = res.get("stages")
    if st:
        lines += ["", "CPU per request by stage at c1 (serving thread, in process; stage wrappers add ~1-2 us each):",
                  f"{'stage':<34} " + " ".join(f"{n + ' us':>{max(11, len(n) + 3)}}" for n in st)]
        names = list(dict.fromkeys(k for v in st.values() for k in v["stages_us"]))
        for k in names:
            lines.append(f"{k:<34} " + " ".join(f"{v['stages_us'].get(k, 0):>{max(11, len(n) + 3)}.0f}"
                                                for n, v in st.items()))
        lines.append(f"{'whole process (from /proc)':<34} " +
                     " ".join(f"{v['cpu_ms'] * 1000:>{max(11, len(n) + 3)}.0f}" for n, v in st.items()))
    lines.append(f"\n(load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
                 f"{os.cpu_count()} cores)")
    return "\n".join(lines)


__all__ = ["PY", "ReplicaBackends", "render_replica", "replica_bench", "round_trips"]
