"""`make bench`: the gateway's overhead against a bare proxy (and the LiteLLM proxy, when it installs), in one run.

    .venv/bin/python -m tests.perf.run [--quick] [--no-litellm] [--no-write] [--no-replica]
    .venv/bin/python -m tests.perf.run --replica-only [--quick] [--rounds N] [--no-strace] [--stages]
        [--replica-ab PATCHES]   (`make bench-replica`)

What it starts (all on loopback, all stopped at the end):
  - the vendor stand-in: nginx (installed with apt-get when missing; a minimal asyncio server only where nginx
    cannot be installed, and the table says so) - `tests/perf/standin.py`;
  - the load generator: wrk in its own process with `tests/perf/wrk/post.lua` (a ~1 KB chat body; any non-2xx,
    socket error or timeout makes the run fail: a run with errors is not a figure);
  - the floor: `tests/perf/bare_proxy.py` (FastAPI + uvicorn/uvloop/httptools, one shared upstream client, the
    same client library as the gateway's adapter);
  - the gateway: `gateway serve --config config/demo.yaml` with every DEMO_<PROVIDER>_URL at the stand-in, model
    `auto` (routing over the eight seed deployments), metering, metrics, the ledger at a temporary SQLite file;
  - optionally the LiteLLM proxy from its own venv under .bench/ (one model at the stand-in).

Each proxy runs as one worker, fresh for non-streaming and for streaming. Figures per proxy and mode: CPU time of
the proxy's process tree per request over the c64 run (user+sys from /proc/<pid>/stat), p50/p99 latency at
concurrency 1, requests/s at concurrency 64, time to first byte of streams (`tests/perf/ttfb.py`), RSS after the
run. Then the replica path beside the embedded one (`tests/perf/replica.py`, issue 16: PostgreSQL ledger, Redis,
a required key with budget and rpm/tpm). Then: HTTP client choice (bare proxy with httpx vs aiohttp at c64), routing decisions/s at 10..10,000
deployments, ledger rows/s, `gateway serve` start-up time. The table is printed and written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.perf.harness import (PY, QUICK, BenchError, Plan, cpu_seconds, ensure_tools, log, measure,
                                measure_interleaved, median_figures, paired_ratios, wrk)
from tests.perf.micro import ledger_bench, routing_bench, routing_subprocess, sqlite_ledger_rows, startup_bench
from tests.perf.proxies import bare_proxy, chat_body, gateway_proxy, litellm_available, litellm_proxy
from tests.perf.replica import render_replica, replica_bench
from tests.perf.report import render, targets, write_results
from tests.perf.standin import AsyncioStandIn, NginxStandIn, StandIn

__all__ = ["PY", "bare_proxy", "chat_body", "ensure_tools", "gateway_proxy", "main", "wrk"]  # tests.perf.profile


def proposals(variants: list[str], plan: Plan) -> int:
    """The gateway with each set of proposed patches, next to the bare proxy, non-stream and stream."""
    nginx, wrk_bin = ensure_tools([])
    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    stand: StandIn = NginxStandIn(nginx) if nginx else AsyncioStandIn()
    stand.start()
    rows = []
    try:
        for stream in (False, True):
            body = work / f"body-{stream}.json"
            body.write_bytes(chat_body("auto", stream))
            mode = "stream" if stream else "non-stream"
            proxies = [bare_proxy(stand.port, stream, work)] + [gateway_proxy(stand.port, stream, work, v)
                                                                 for v in variants]
            url = f"http://127.0.0.1:{stand.port}/{'sse/' if stream else ''}direct/v1/chat/completions"
            runs, _ = measure_interleaved(proxies, url, wrk_bin, body, stream, plan)
            rows += [(mode, name, median_figures(r)) for name, r in runs.items()]
    finally:
        stand.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'mode':<10} {'proxy':<34} {'CPU ms/req':>10} {'p50 us':>8} {'c64 req/s':>10} {'ttfb us':>8}")
    for mode, name, f in rows:
        print(f"{mode:<10} {name:<34} {f.cpu_ms:>10.3f} {f.p50_us:>8.0f} {f.rps:>10.0f} {f.ttfb_us or 0:>8.0f}")
    return 0


def replica_only(plan: Plan, strace: bool, stages: bool, ab: str | None = None) -> int:
    """The replica path beside the embedded one, alone (issue 16)."""
    nginx, wrk_bin = ensure_tools([])
    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    stand: StandIn = NginxStandIn(nginx) if nginx else AsyncioStandIn()
    stand.start()
    try:
        text = render_replica(replica_bench(stand.port, wrk_bin, work, plan, strace=strace, stages=stages, ab=ab),
                              plan)
    finally:
        stand.stop()
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.perf.run")
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test, not figures)")
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy comparison")
    ap.add_argument("--no-write", action="store_true", help="do not overwrite tests/perf/RESULTS.md")
    ap.add_argument("--rounds", type=int, default=None, help="bare/gateway measurement rounds (default 7, quick 1)")
    ap.add_argument("--only", choices=("gateway", "bare", "micro"), default=None, help="debugging: one part")
    ap.add_argument("--replica-only", action="store_true",
                    help="only the replica path (PostgreSQL, Redis, key with limits) beside the embedded one")
    ap.add_argument("--no-replica", action="store_true", help="skip the replica path")
    ap.add_argument("--no-strace", action="store_true", help="replica path: skip the system-call / round-trip count")
    ap.add_argument("--stages", action="store_true",
                    help="replica path: also CPU per request of each stage at c1 (instrumented gateways)")
    ap.add_argument("--replica-ab", metavar="PATCHES", default=None,
                    help="replica path: also a replica gateway with these serve_patched patches, measured in the same "
                         "rounds (e.g. queuedledger: the ledger's writes before lone ones went direct)")
    ap.add_argument("--routing-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--proposals", nargs="+", metavar="PATCHES",
                    help="measure the gateway with in-memory patches (tests/perf/proposals/serve_patched.py), e.g. "
                         "'' noledger nowait; '' is the unpatched gateway")
    args = ap.parse_args(argv)
    if args.routing_json:
        print(json.dumps(routing_bench()))
        return 0
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.proposals:
        return proposals(args.proposals, plan)
    if args.replica_only:
        return replica_only(plan, not args.no_strace, args.stages, args.replica_ab)
    notes: list[str] = []
    t_start = time.perf_counter()
    nginx, wrk_bin = ensure_tools(notes)
    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    stand: StandIn = NginxStandIn(nginx) if nginx else AsyncioStandIn()
    stand.start()
    res: dict[str, Any] = {"notes": notes, "standin": stand.kind, "bare": {}, "gateway": {}, "direct": {}, "paired": {},
                           "plan": f"c1 {plan.c1_s}s, c64 {plan.c64_s}s, warm-up {plan.warm_s}s at c8; bare and "
                                   f"gateway measured in turn, {plan.rounds} round(s), medians"}
    from tests.perf.bare_proxy import default_client

    res["client_used"] = default_client()
    bodies = {}
    for model in ("auto", "bench"):
        for stream in (False, True):
            p = work / f"{model}-{'stream' if stream else 'json'}.json"
            p.write_bytes(chat_body(model, stream))
            bodies[(model, stream)] = p
    try:
        base = f"http://127.0.0.1:{stand.port}"
        if args.only != "micro":
            for stream in (False, True):
                mode = "stream" if stream else "non-stream"
                url = f"{base}/{'sse/' if stream else ''}direct/v1/chat/completions"
                proxies = [make(stand.port, stream, work) for name, make in
                           (("bare", bare_proxy), ("gateway", gateway_proxy)) if args.only in (None, name)]
                runs, direct = measure_interleaved(proxies, url, wrk_bin, bodies[("auto", stream)], stream, plan)
                res["direct"][mode] = {k: statistics.median(d[k] for d in direct) for k in direct[0]}
                for name, rounds in runs.items():
                    res[name][mode] = median_figures(rounds)
                if "bare" in runs and "gateway" in runs:
                    res["paired"][mode] = paired_ratios(runs["gateway"], runs["bare"], direct)
            rows = sqlite_ledger_rows(work / "ledger.db")
            if args.only in (None, "gateway"):
                notes.append(f"gateway ledger: SQLite at a temporary file, {rows} rows written" if rows else
                             "gateway ledger: `gateway serve` wrote no SQLite rows (app.py builds the in-memory "
                             "ledger unless ledger_url is wired), so the gateway figures exclude SQLite writes")
        if args.only is None:
            clients: dict[str, dict[str, float]] = {}
            for client in ("httpx", "aiohttp"):
                proxy = bare_proxy(stand.port, False, work, client)
                with proxy:
                    wrk(wrk_bin, f"http://127.0.0.1:{proxy.port}/v1/chat/completions", bodies[("auto", False)], 64,
                        plan.warm_s, f"{client} warm-up")
                    before = cpu_seconds(proxy.pid)
                    r = wrk(wrk_bin, f"http://127.0.0.1:{proxy.port}/v1/chat/completions", bodies[("auto", False)],
                            64, plan.client_s, f"bare[{client}] c64")
                    clients[client] = {"rps": r["rps"],
                                       "cpu_ms": (cpu_seconds(proxy.pid) - before) * 1000 / r["requests"]}
                log(f"bare[{client}] c64: {clients[client]['rps']:.0f} req/s")
            res["clients"] = clients
            exe = None if args.no_litellm else litellm_available(notes, True)
            if args.no_litellm:
                notes.append("LiteLLM proxy skipped (--no-litellm)")
            if exe is not None:
                res["litellm"] = {}
                for stream in (False, True):
                    mode = "stream" if stream else "non-stream"
                    try:
                        proxy = litellm_proxy(exe, stand.port, stream, work)
                        res["litellm"][mode] = measure(proxy, wrk_bin,
                                                       f"http://127.0.0.1:{proxy.port}/v1/chat/completions",
                                                       bodies[("bench", stream)], stream, plan,
                                                       c1_s=plan.litellm_c1_s, c64_s=plan.litellm_c64_s)
                    except BenchError as e:
                        notes.append(f"LiteLLM {mode} not measured: {e}")
                if not res["litellm"]:
                    res.pop("litellm")
        res["routing"] = routing_subprocess()
        for r in res["routing"]:
            log(f"routing {r['deployments']}: {r['us_per_decision']:.1f} us/decision")
        res["ledger"] = ledger_bench(work, notes)
        res["startup"] = startup_bench(stand.port, work) if args.only != "micro" else [0.0]
        if args.only is None and not args.no_replica:
            try:
                res["replica"] = replica_bench(stand.port, wrk_bin, work, plan, strace=not args.no_strace)
            except (BenchError, OSError) as e:  # no PostgreSQL or Redis here: a note, not a failed bench
                notes.append(f"replica path not measured: {type(e).__name__}: {e}")
    finally:
        stand.stop()
    if args.only:
        print(json.dumps({k: v for k, v in res.items() if k in ("routing", "ledger", "startup")}, default=str))
        for k in ("bare", "gateway"):
            for mode, f in res[k].items():
                print(k, mode, f)
        shutil.rmtree(work, ignore_errors=True)
        return 0
    text = render(res)
    text += "\n\nTargets (issue 8):\n" + "\n".join(targets(res))
    if "replica" in res:
        text += "\n\n" + render_replica(res["replica"], plan)
    text += f"\n\n(whole run: {time.perf_counter() - t_start:.0f} s)"
    print(text)
    if not args.no_write:
        write_results(text, argv if argv is not None else sys.argv[1:])
    if not any("not measured" in n for n in notes):
        shutil.rmtree(work, ignore_errors=True)  # otherwise kept: the notes name the logs in it
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        sys.exit(1)
