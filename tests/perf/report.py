"""The table `make bench` prints, the issue's targets checked against it, and RESULTS.md."""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from tests.perf.harness import HERE

# ----------------------------------------------------------------------------------------------------- report

def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def render(res: dict[str, Any]) -> str:
    lines: list[str] = []
    lit = res.get("litellm") or {}
    has_lit = bool(lit)
    head = f"{'figure':<30} {'mode':<10} {'stand-in':>9} {'bare':>9} {'gateway':>9} {'gw/bare':>8}"
    if has_lit:
        head += f" {'litellm':>9} {'gw/litellm':>10}"
    lines += [head, "-" * len(head)]
    for mode in ("non-stream", "stream"):
        b, g, d = res["bare"][mode], res["gateway"][mode], res["direct"][mode]
        L = lit.get(mode)
        paired = res.get("paired", {}).get(mode, {})
        rows: list[tuple[str, str, float | None, float, float, float | None, int]] = [
            ("CPU per request (ms)", "cpu_ms", None, b.cpu_ms, g.cpu_ms, L.cpu_ms if L else None, 3),
            ("p50 latency c1 (us)", "p50_us", d["p50_us"], b.p50_us, g.p50_us, L.p50_us if L else None, 0),
            ("p99 latency c1 (us)", "p99_us", d["p99_us"], b.p99_us, g.p99_us, L.p99_us if L else None, 0),
            ("added p50 vs stand-in (us)", "added_p50_us", None, b.p50_us - d["p50_us"], g.p50_us - d["p50_us"],
             (L.p50_us - d["p50_us"]) if L else None, 0),
            ("requests/s c64", "rps", None, b.rps, g.rps, L.rps if L else None, 0),
        ]
        if mode == "stream":
            rows.append(("time to first byte c1 (us)", "ttfb_us", d.get("ttfb_us"), b.ttfb_us or 0, g.ttfb_us or 0,
                         L.ttfb_us if L else None, 0))
        rows.append(("RSS after run (MB)", "rss_mb", None, b.rss_mb, g.rss_mb, L.rss_mb if L else None, 1))
        for name, key, dv, bv, gv, lv, prec in rows:
            ratio = f"{paired[key]:.2f}x" if key in paired else _ratio(gv, bv)
            line = (f"{name:<30} {mode:<10} {('%.*f' % (prec, dv)) if dv is not None else '-':>9} "
                    f"{bv:>9.{prec}f} {gv:>9.{prec}f} {ratio:>8}")
            if has_lit:
                line += f" {('%.*f' % (prec, lv)) if lv is not None else '-':>9} {_ratio(gv, lv):>10}"
            lines.append(line)
    lines.append("")
    cc = res.get("clients")
    if cc:
        lines.append("HTTP client for upstream calls (bare proxy, non-stream, c64): " + ", ".join(
            f"{k} {v['rps']:.0f} req/s ({v['cpu_ms']:.3f} ms CPU/req)" for k, v in cc.items())
            + f"; the gateway uses {res['client_used']}")
    lines.append("")
    lines.append(f"{'routing: deployments':<22} {'decisions/s':>12} {'us/decision':>12} {'ns/deployment':>14}")
    for r in res["routing"]:
        lines.append(f"{r['deployments']:<22} {r['decisions_per_s']:>12.0f} {r['us_per_decision']:>12.1f} "
                     f"{r['ns_per_deployment']:>14.0f}")
    lines.append("")
    lg = res.get("ledger")
    if lg:
        lines.append(f"ledger (SQLite, SqlLedger group commit, {lg['concurrency']} concurrent requests, open+finish "
                     f"each): {lg['rows_per_s']:.0f} rows/s ({lg['rows']} rows in {lg['transactions']} transactions)")
    st = res["startup"]
    lines.append(f"`gateway serve` start-up until /healthz answers: median {statistics.median(st):.2f} s "
                 f"(runs: {', '.join(f'{t:.2f}' for t in st)})")
    lines.append(f"vendor stand-in: {res['standin']}; load: wrk -t1, {res['plan']}")
    for n in res["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def targets(res: dict[str, Any]) -> list[str]:
    out = []

    def check(name: str, ok: bool, detail: str) -> None:
        out.append(f"[{'met ' if ok else 'MISS'}] {name}: {detail}")

    # Ratios to three decimals: at two, 0.7997 would print as a missed "0.80x".

    for mode in ("non-stream", "stream"):
        b, g, d = res["bare"][mode], res["gateway"][mode], res["direct"][mode]
        paired = res.get("paired", {}).get(mode, {})
        r = paired.get("cpu_ms", g.cpu_ms / b.cpu_ms)
        check(f"CPU/request {mode} <= 1.5x bare", r <= 1.5, f"{r:.3f}x ({g.cpu_ms:.3f} vs {b.cpu_ms:.3f} ms)")
        r = paired.get("rps", g.rps / b.rps)
        check(f"req/s c64 {mode} >= 0.8x bare", r >= 0.8, f"{r:.3f}x ({g.rps:.0f} vs {b.rps:.0f})")
        L = (res.get("litellm") or {}).get(mode)
        if L:
            r = g.rps / L.rps
            check(f"req/s c64 {mode} >= 10x LiteLLM", r >= 10, f"{r:.1f}x ({g.rps:.0f} vs {L.rps:.0f})")
        ga, ba = g.p50_us - d["p50_us"], b.p50_us - d["p50_us"]
        r = paired.get("added_p50_us", ga / ba)
        check(f"added p50 c1 {mode} <= 1.5x bare's", r <= 1.5, f"{r:.3f}x ({ga:.0f} vs {ba:.0f} us)")
        check(f"RSS {mode} <= 150 MB", g.rss_mb <= 150, f"{g.rss_mb:.0f} MB")
    r100 = next(r for r in res["routing"] if r["deployments"] == 100)
    check("routing <= 50 us/decision at 100 deployments", r100["us_per_decision"] <= 50,
          f"{r100['us_per_decision']:.1f} us")
    r10k = next(r for r in res["routing"] if r["deployments"] == 10_000)
    lin = r10k["ns_per_deployment"] / r100["ns_per_deployment"]
    check("routing at most linear to 10,000", lin <= 1.5, f"per-deployment cost at 10,000 = {lin:.2f}x that at 100")
    med = statistics.median(res["startup"])
    check("`gateway serve` ready < 1.5 s", med < 1.5, f"{med:.2f} s")
    return out


def write_results(text: str, argv: list[str]) -> None:
    cmd = "make bench   # = .venv/bin/python -m tests.perf.run" + (" " + " ".join(argv) if argv else "")
    (HERE / "RESULTS.md").write_text(
        "# Benchmark results (latest run)\n\n"
        f"Command: `{cmd}`  \n"
        f"Run at {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}.\n\n"
        "Ratios are to the bare pass-through proxy (tests/perf/bare_proxy.py) and the LiteLLM proxy measured in the "
        "same run. Bare and gateway run side by side and are measured back to back in several short rounds; their "
        "figures are medians over the rounds and gw/bare is the median of the per-round ratios. CPU per request = "
        "user+sys seconds of the proxy's process tree during a c64 run / requests served in it. Latency and "
        "requests/s from wrk (1 thread, ~1 KB chat body, any error fails the run); time to first byte from "
        "tests/perf/ttfb.py at concurrency 1.\n\n"
        "```\n" + text + "\n```\n\n" + (HERE / "FINDINGS.md").read_text())


# -------------------------------------------------------------------------------------------------------- main
