"""Where one profile spends more than another, in microseconds of CPU per request.

    .venv/bin/python -m tests.perf.profile_diff REPLICA.folded CPU_US EMBEDDED.folded CPU_US [--top N]

The folded files come from `python -m tests.perf.profile --blocking` (whole stacks: the inclusive shares are right);
CPU_US is that target's CPU per request at the same concurrency (from `make bench-replica`). A share of samples
times the CPU per request is that part's CPU per request, so two targets compare in the same unit. Prints the
request path's stages (a stack counts for the first stage, in the order below, whose frames it contains) and the
functions whose own time differs most. How issue 16's replica path was taken apart (tests/perf/FINDINGS.md).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from tests.perf.profile import read_folded

STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("auth", ("Authenticator.",)),
    ("admission", ("Admission.admit", "DegradingGate.admit", "RedisGate.", "MemoryGate", "_shared_state")),
    ("settlement", ("RedisOutbox", "Settler", "settler.py", "outbox.py")),
    ("ledger", ("SqlLedger", "EngineSink", "SqliteSink", "SpoolingSink", "asyncpg", "WalCheckpointer", "ledger/")),
    ("prefix cache", ("PrefixCache", "cache/store.py")),
    ("accounting", ("RequestBooks", "accounting.py")),
    ("routing", ("price_index.py", "routing.py")),
    ("vendor call", ("openai_compat.py", "aiohttp/")),
    ("parse", ("parse.py", "chat.py", "segments.py")),
    ("http server, rest of the path", ("httptools_impl", "responses.py", "openai_routes.py", "app.py")),
]


def load(folded: Path, cpu_us: float) -> tuple[dict[str, float], dict[str, float]]:
    """(per stage, per function's own time), in us per request."""
    stages: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, frames, count in read_folded(folded):
        total += count
        stage = next((name for name, keys in STAGES if any(k in stack for k in keys)), "event loop, other")
        stages[stage] += count
        if frames:
            own[frames[-1]] += count
    scale = cpu_us / max(total, 1)
    return {k: v * scale for k, v in stages.items()}, {k: v * scale for k, v in own.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("a_cpu_us", type=float)
    ap.add_argument("b", type=Path)
    ap.add_argument("b_cpu_us", type=float)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    sa, fa = load(args.a, args.a_cpu_us)
    sb, fb = load(args.b, args.b_cpu_us)
    print(f"{'stage':32} {'A us':>8} {'B us':>8} {'A - B':>8}")
    for name in [n for n, _ in STAGES] + ["event loop, other"]:
        a, b = sa.get(name, 0.0), sb.get(name, 0.0)
        print(f"{name:32} {a:8.1f} {b:8.1f} {a - b:8.1f}")
    print(f"\nfunctions whose own time differs most (A - B, us per request):")
    diffs = sorted(((fa.get(k, 0.0) - fb.get(k, 0.0), k) for k in set(fa) | set(fb)), reverse=True)
    for d, k in diffs[: args.top]:
        print(f"  {d:6.1f}  (A {fa.get(k, 0.0):5.1f}, B {fb.get(k, 0.0):5.1f})  {k}")


if __name__ == "__main__":
    main()
