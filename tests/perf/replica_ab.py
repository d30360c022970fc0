"""`python -m tests.perf.replica_ab --base DIR [--rounds N]`: the replica path of another source tree (DIR, e.g.
`git archive main | tar -x -C DIR`) beside this tree's, and this tree's embedded path, measured in the same
interleaved rounds (`harness.measure_interleaved`), so a change's gain is a same-run ratio rather than two runs
minutes apart on a machine whose speed drifts. Same bench as `make bench-replica` (tests/perf/replica.py): one
PostgreSQL database, one Redis prefix and one client key, shared by both replicas (their ledgers are the same
schema; the key's budget and limits are far above what the bench sends).

Prints per proxy the medians, and per round the ratios replica(this) / replica(DIR) and each replica / embedded.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from tests.perf.harness import PY, Figures, Plan, ensure_tools, measure_interleaved
from tests.perf.proxies import chat_body, gateway_proxy
from tests.perf.replica import ReplicaBackends
from tests.perf.standin import AsyncioStandIn, NginxStandIn, StandIn


def _from_tree(cmd: list[str], tree: Path) -> list[str]:
    """`gateway serve ...` with the package imported from `tree` (the bench runs every proxy in this tree's
    directory, which `python -m` would put first on the path)."""
    boot = (f"import sys; sys.path.insert(0, {str(tree)!r}); sys.argv[0] = 'gateway'; "
            "from gateway.cli import main; main()")
    return [PY, "-c", boot, *cmd[cmd.index("serve"):]]


def _ratio(a: list[Figures], b: list[Figures], field: str) -> float:
    return statistics.median(getattr(x, field) / getattr(y, field) for x, y in zip(a, b) if getattr(y, field))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="the other source tree (its gateway/ package)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    plan = Plan(rounds=args.rounds)
    nginx, wrk_bin = ensure_tools([])
    work = Path(tempfile.mkdtemp(prefix="gw-bench-ab-"))
    stand: StandIn = NginxStandIn(nginx) if nginx else AsyncioStandIn()
    stand.start()
    try:
        body = work / "body.json"
        body.write_bytes(chat_body("auto", False))
        with ReplicaBackends(work) as backends:
            embedded = gateway_proxy(stand.port, False, work)
            embedded.name = "embedded"
            base = backends.proxy(stand.port, work)
            base.name, base.cmd = "replica-base", _from_tree(base.cmd, args.base.resolve())
            this = backends.proxy(stand.port, work)
            runs, _ = measure_interleaved([embedded, base, this], f"http://127.0.0.1:{stand.port}/direct/v1/chat/"
                                          "completions", wrk_bin, body, False, plan)
    finally:
        stand.stop()
        shutil.rmtree(work, ignore_errors=True)
    emb, rb, rt = runs["embedded"], runs["replica-base"], runs["replica"]
    print(f"{plan.rounds} interleaved rounds; medians; ratios are medians of per-round ratios")
    print(f"{'':<14} {'CPU ms/req c1':>14} {'CPU ms/req c64':>15} {'p50 c1 us':>10} {'req/s c64':>10}")
    for name, r in (("embedded", emb), ("replica-base", rb), ("replica", rt)):
        print(f"{name:<14} {statistics.median(f.cpu_c1_ms for f in r):>14.3f} "
              f"{statistics.median(f.cpu_ms for f in r):>15.3f} {statistics.median(f.p50_us for f in r):>10.0f} "
              f"{statistics.median(f.rps for f in r):>10.0f}")
    for label, a, b in (("replica / replica-base", rt, rb), ("replica-base / embedded", rb, emb),
                        ("replica / embedded", rt, emb)):
        print(f"{label:<24} CPU c1 {_ratio(a, b, 'cpu_c1_ms'):.2f}x  CPU c64 {_ratio(a, b, 'cpu_ms'):.2f}x  "
              f"req/s c64 {_ratio(a, b, 'rps'):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
