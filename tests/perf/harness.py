"""The measuring machinery of `make bench`: tools, proxy processes, load, figures and the interleaved rounds.

A proxy is measured as a process tree (user+sys CPU from /proc, RSS), under wrk (`tests/perf/wrk/post.lua`, any
error fails the run) and the time-to-first-byte client (`tests/perf/ttfb.py`). Several proxies run side by side and
are measured back to back in short rounds, because this machine's speed drifts by +-20 % over seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.perf.standin import wait_http

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable
LUA = HERE / "wrk" / "post.lua"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Plan:
    rounds: int = 7  # bare and gateway measured in turn, this many times; each figure is the median
    warm_s: int = 2
    c1_s: int = 3
    c64_s: int = 4
    ttfb_n: int = 200
    client_s: int = 5
    litellm_c1_s: int = 4
    litellm_c64_s: int = 8


QUICK = Plan(rounds=1, warm_s=1, c1_s=2, c64_s=3, ttfb_n=100, client_s=2, litellm_c1_s=2, litellm_c64_s=4)


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- tools

def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)


def ensure_tools(notes: list[str]) -> tuple[str | None, str]:
    """nginx and wrk from Debian's packages, installed when missing (root and apt-get needed)."""
    missing = [t for t in ("nginx", "wrk") if _which(t) is None]
    if missing:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"installing {' '.join(missing)} with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            try:
                subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=180, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for pkg in missing:  # one at a time: a missing nginx must not cost us wrk
                    subprocess.run(["apt-get", "install", "-y", "-qq", pkg], env=env, timeout=300, check=False,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                log("apt-get timed out")
        else:
            log(f"cannot install {' '.join(missing)}: not root or no apt-get")
    wrk = _which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed and could not be installed (apt-get install wrk)")
    nginx = _which("nginx")
    if nginx is None:
        notes.append("nginx could not be installed: the vendor stand-in is the minimal asyncio server "
                     "(tests/perf/standin.py), slower than nginx and sharing the cores with the proxies")
    return nginx, wrk


# ------------------------------------------------------------------------------------------------ processes

def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    return sum((st[1] for st in (_stat(p) for p in _tree(root)) if st is not None), 0) / TICK


def rss_mb(root: int) -> float:
    total = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Proxy:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, health: str, logfile: Path,
                 start_timeout: float = 30.0, bearer: str | None = None) -> None:
        self.name, self.cmd, self.env, self.port, self.health = name, cmd, env, port, health
        self.bearer = bearer  # the client key wrk sends (None: the fixed bench token of post.lua)
        self.logfile, self.start_timeout = logfile, start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def start(self) -> Proxy:
        out = open(self.logfile, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=out, stderr=out,
                                     start_new_session=True)
        try:
            wait_http(self.port, self.health, timeout=self.start_timeout, proc=self.proc)
        except Exception as e:
            self.stop()
            raise BenchError(f"{self.name} did not start: {e} (log: {self.logfile})") from None
        self.startup_s = time.perf_counter() - t0
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what this proxy started
            self.proc.wait(5)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------------ load

def wrk(wrk_bin: str, url: str, body: Path, conns: int, seconds: int, what: str,
        bearer: str | None = None) -> dict[str, Any]:
    cmd = [wrk_bin, "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s", "-s", str(LUA), url]
    env = {**os.environ, "BENCH_BODY": str(body)}
    if bearer:
        env["BENCH_BEARER"] = bearer
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk failed for {what}: {res.stdout[-500:]} {res.stderr[-500:]}")
    out: dict[str, Any] = json.loads(line[len("BENCH_JSON "):])
    errors = {k: out[k] for k in ("status", "connect", "read", "write", "timeout") if out[k]}
    if errors or out["requests"] == 0:
        raise BenchError(f"{what}: run with errors is not a figure: {errors or 'no requests'} "
                         f"of {out['requests']} requests")
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    return out


def ttfb(url: str, body: Path, count: int, what: str) -> dict[str, Any]:
    res = subprocess.run([PY, "-m", "tests.perf.ttfb", url, str(body), str(count), "20"], cwd=ROOT,
                         capture_output=True, text=True, timeout=90)
    try:
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"ttfb client failed for {what}: {res.stderr[-500:]}") from None
    if out.get("errors") or not out.get("n"):
        raise BenchError(f"{what}: time-to-first-byte run had {out.get('errors')} errors of {out.get('n')}")
    return out


@dataclass
class Figures:
    cpu_ms: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    rps: float = 0.0
    ttfb_us: float | None = None
    rss_mb: float = 0.0
    startup_s: float = 0.0
    requests: int = 0
    cpu_c1_ms: float = 0.0  # CPU per request over the c1 run (the c1 latency is CPU-bound: see FINDINGS.md)


def _c1(proxy: Proxy, wrk_bin: str, url: str, body: Path, stream: bool, plan: Plan, c1_s: int, f: Figures) -> None:
    label = f"{proxy.name} {'stream' if stream else 'non-stream'}"
    before = cpu_seconds(proxy.pid)
    c1 = wrk(wrk_bin, url, body, 1, c1_s, f"{label} c1", proxy.bearer)
    f.cpu_c1_ms = (cpu_seconds(proxy.pid) - before) * 1000 / c1["requests"]
    f.p50_us, f.p99_us = c1["p50_us"], c1["p99_us"]
    if stream:
        f.ttfb_us = ttfb(url, body, plan.ttfb_n, label)["ttfb_p50_us"]


def _c64(proxy: Proxy, wrk_bin: str, url: str, body: Path, stream: bool, c64_s: int, f: Figures) -> None:
    label = f"{proxy.name} {'stream' if stream else 'non-stream'}"
    before = cpu_seconds(proxy.pid)
    c64 = wrk(wrk_bin, url, body, 64, c64_s, f"{label} c64", proxy.bearer)
    after = cpu_seconds(proxy.pid)
    f.rps, f.requests = c64["rps"], c64["requests"]
    f.cpu_ms = (after - before) * 1000 / c64["requests"]
    f.rss_mb = rss_mb(proxy.pid)
    log(f"{label}: cpu {f.cpu_ms:.3f} ms/req (c1 {f.cpu_c1_ms:.3f}), p50 {f.p50_us:.0f} us, p99 {f.p99_us:.0f} us, "
        f"c64 {f.rps:.0f} req/s, ttfb {f.ttfb_us or 0:.0f} us, rss {f.rss_mb:.0f} MB")


def median_figures(rounds: list[Figures]) -> Figures:
    def med(name: str) -> Any:
        values = [getattr(r, name) for r in rounds]
        return None if values[0] is None else statistics.median(values)

    return Figures(cpu_ms=med("cpu_ms"), cpu_c1_ms=med("cpu_c1_ms"), p50_us=med("p50_us"), p99_us=med("p99_us"), rps=med("rps"),
                   ttfb_us=med("ttfb_us"), rss_mb=rounds[-1].rss_mb, startup_s=rounds[0].startup_s,
                   requests=sum(r.requests for r in rounds))


def paired_ratios(g: list[Figures], b: list[Figures], direct: list[dict[str, float]]) -> dict[str, float]:
    """gateway / bare per round (both measured in the same minute), then the median over rounds: steadier than a
    ratio of medians when the machine's speed drifts between rounds."""
    def med(pairs: list[tuple[float | None, float | None]]) -> float:
        return statistics.median(x / y for x, y in pairs if x is not None and y)

    out = {
        "cpu_ms": med([(gi.cpu_ms, bi.cpu_ms) for gi, bi in zip(g, b)]),
        "rps": med([(gi.rps, bi.rps) for gi, bi in zip(g, b)]),
        "p50_us": med([(gi.p50_us, bi.p50_us) for gi, bi in zip(g, b)]),
        "p99_us": med([(gi.p99_us, bi.p99_us) for gi, bi in zip(g, b)]),
        "added_p50_us": med([(gi.p50_us - d["p50_us"], bi.p50_us - d["p50_us"]) for gi, bi, d in zip(g, b, direct)]),
        "rss_mb": g[-1].rss_mb / b[-1].rss_mb,
    }
    if g[0].ttfb_us is not None:
        out["ttfb_us"] = med([(gi.ttfb_us, bi.ttfb_us) for gi, bi in zip(g, b)])
    return out


def measure(proxy: Proxy, wrk_bin: str, url: str, body: Path, stream: bool, plan: Plan, *, c1_s: int | None = None,
            c64_s: int | None = None) -> Figures:
    """One proxy on its own (the LiteLLM proxy): warm-up, then one round."""
    with proxy:
        wrk(wrk_bin, url, body, 8, plan.warm_s, f"{proxy.name} warm-up", proxy.bearer)
        f = Figures(startup_s=proxy.startup_s)
        _c1(proxy, wrk_bin, url, body, stream, plan, c1_s or plan.c1_s, f)
        _c64(proxy, wrk_bin, url, body, stream, c64_s or plan.c64_s, f)
        return f


def measure_interleaved(proxies: list[Proxy], direct_url: str, wrk_bin: str, body: Path, stream: bool,
                        plan: Plan) -> tuple[dict[str, list[Figures]], list[dict[str, float]]]:
    """All proxies up at once, then `plan.rounds` short rounds; in each, every phase (c1 with the stand-in measured
    directly first, then c64) runs for each proxy in turn. This machine's speed drifts by +-20 % over seconds
    (the bare proxy alone moved between 0.31 and 0.44 ms CPU per request in consecutive 4 s windows), so figures
    taken a minute apart are not comparable; taken back to back, their ratio is. Returns every round's figures."""
    runs: dict[str, list[Figures]] = {p.name: [] for p in proxies}
    direct: list[dict[str, float]] = []
    started: list[Proxy] = []
    urls = {p.name: f"http://127.0.0.1:{p.port}/v1/chat/completions" for p in proxies}
    try:
        for p in proxies:
            started.append(p.start())
        for p in proxies:
            wrk(wrk_bin, urls[p.name], body, 8, plan.warm_s, f"{p.name} warm-up", p.bearer)
        for n in range(plan.rounds):
            log(f"round {n + 1}/{plan.rounds} ({'stream' if stream else 'non-stream'})")
            c1 = wrk(wrk_bin, direct_url, body, 1, plan.c1_s, "stand-in c1")
            d = {"p50_us": c1["p50_us"], "p99_us": c1["p99_us"]}
            if stream:
                d["ttfb_us"] = ttfb(direct_url, body, plan.ttfb_n, "stand-in")["ttfb_p50_us"]
            direct.append(d)
            figures = {p.name: Figures(startup_s=p.startup_s) for p in proxies}
            # Every other round in reverse order (bare, gateway / gateway, bare): a machine that slows down or
            # speeds up over a round then favours neither.
            order = proxies if n % 2 == 0 else proxies[::-1]
            for p in order:
                _c1(p, wrk_bin, urls[p.name], body, stream, plan, plan.c1_s, figures[p.name])
            for p in order:
                _c64(p, wrk_bin, urls[p.name], body, stream, plan.c64_s, figures[p.name])
            for name, f in figures.items():
                runs[name].append(f)
    finally:
        for p in started:
            p.stop()
    return runs, direct
