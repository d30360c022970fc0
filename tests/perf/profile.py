"""Profile the gateway (or the bare proxy) under wrk load with py-spy, and print where the CPU goes.

    .venv/bin/python -m tests.perf.profile [--stream] [--target gateway|bare|replica] [--seconds 8] [--conns 64]

`--target replica` profiles the replica path (PostgreSQL ledger, Redis, a required key with budget and rpm/tpm;
tests/perf/replica.py sets up and removes the database, the Redis keys and the key).

Needs py-spy in the venv (`.venv/bin/pip install py-spy`) and root (ptrace). Prints the top functions by self
samples and by inclusive samples (folded stacks from `py-spy record -f raw`); the folded file is kept for
flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from tests.perf.replica import ReplicaBackends
from tests.perf.run import PY, bare_proxy, chat_body, ensure_tools, gateway_proxy, wrk
from tests.perf.standin import AsyncioStandIn, NginxStandIn, StandIn


def read_folded(folded: Path) -> Iterator[tuple[str, list[str], int]]:
    """Each stack of a `py-spy record -f raw` file: the raw stack, its frames as 'function (file)' (no directories,
    no line numbers), and its sample count."""
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1].rstrip(")") + ")"
                  if " (" in f else f for f in stack.split(";")]
        yield stack, frames, int(n)


def summarize(folded: Path, top: int) -> str:
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for _, frames, count in read_folded(folded):
        total += count
        if frames:
            self_c[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"{total} samples", "", "self:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in self_c.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--target", choices=("gateway", "bare", "replica"), default="gateway")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--top", type=int, default=45)
    ap.add_argument("--blocking", action="store_true",
                    help="pause the process per sample: whole stacks (inclusive shares right), more overhead")
    args = ap.parse_args()
    nginx, wrk_bin = ensure_tools([])
    work = Path(tempfile.mkdtemp(prefix="gw-prof-"))
    stand: StandIn = NginxStandIn(nginx) if nginx else AsyncioStandIn()
    stand.start()
    body = work / "body.json"
    body.write_bytes(chat_body("auto", args.stream))
    folded = work / "profile.folded"
    try:
        with contextlib.ExitStack() as stack:
            if args.target == "replica":
                proxy = stack.enter_context(ReplicaBackends(work)).proxy(stand.port, work)
            else:
                proxy = (gateway_proxy if args.target == "gateway" else bare_proxy)(stand.port, args.stream, work)
            stack.enter_context(proxy)
            url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
            wrk(wrk_bin, url, body, 8, 2, "warm-up", bearer=proxy.bearer)
            spy = subprocess.Popen([str(Path(PY).parent / "py-spy"), "record", "-r", "250", "-f", "raw", "-o",
                                    str(folded), "-d", str(args.seconds), "-p", str(proxy.pid)]
                                   + ([] if args.blocking else ["--nonblocking"]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t = threading.Thread(target=lambda: wrk(wrk_bin, url, body, args.conns, args.seconds + 1, "load",
                                                      bearer=proxy.bearer))
            t.start()
            spy.wait(args.seconds + 30)
            t.join()
    finally:
        stand.stop()
    print(summarize(folded, args.top))
    print(f"\nfolded stacks: {folded}")


if __name__ == "__main__":
    main()
