"""`python -m tests.perf.memory_limits_ab --base DIR [--runs N]`: the in-process limits (no Redis: the embedded
path with a key that has rpm, tpm and a budget) of another source tree (DIR, e.g. `git archive main | tar -x -C
DIR`) against this tree's admission + settler, CPU per request (best of 5 x 2,000 requests), each run in a fresh
process, alternating. DIR is driven through the API both trees have: check, reserve, settle, adjust."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

_RUN = '''
import sys, time
sys.path.insert(0, {tree!r})
from decimal import Decimal
from gateway.decisions.limits import Budget
from gateway.keys.identity import Identity
from gateway.limits.budgets import Budgets, MemoryCounters
from gateway.limits.ratelimit import MemoryRateLimiter

WHO = Identity(team="bench", key_id="abcdef123456", key_budget=Budget(Decimal(1000000), "month"), rpm=10**8,
               tpm=10**9)
WORST, ACTUAL = Decimal("0.001"), Decimal("0.0007")


async def spend(*a):
    return Decimal(0)


async def main():
    counters, limiter = MemoryCounters(), MemoryRateLimiter()
    budgets = Budgets(counters, spend)
    if {combined!r}:
        from gateway.limits.admission import Admission, MemoryGate
        from gateway.limits.settler import MemorySettler
        admission, settler = Admission(MemoryGate(limiter, counters), budgets), MemorySettler(budgets, counters, limiter)

        async def one(rid):
            settler.settle(WHO, await admission.admit(WHO, rid, 500, WORST), ACTUAL, 500, 420)
    else:
        async def one(rid):
            await limiter.check(WHO, 500)
            r = await budgets.reserve(WHO, rid, WORST)
            await budgets.settle(r, ACTUAL)
            await limiter.adjust(WHO, 500, 420)
    for i in range(1000):
        await one(f"w{{i}}")
    best = []
    for k in range(5):
        t0 = time.process_time()
        for i in range(2000):
            await one(f"r{{k}}-{{i}}")
        best.append((time.process_time() - t0) / 2000 * 1e6)
    print(min(best))

import uvloop
uvloop.run(main())
'''


def _run(tree: Path, combined: bool) -> float:
    out = subprocess.run([sys.executable, "-c", _RUN.format(tree=str(tree), combined=combined)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    this = Path(__file__).resolve().parents[2]
    base, new = [], []
    for _ in range(args.runs):
        base.append(_run(args.base.resolve(), False))
        new.append(_run(this, True))
    print(f"in-process limits, us of CPU per request: base {statistics.median(base):.1f}, "
          f"this tree {statistics.median(new):.1f}; this / base (median of per-run ratios) "
          f"{statistics.median(n / b for n, b in zip(new, base)):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
