"""`gateway serve` with proposed changes to files outside tests/perf applied in memory, to measure their gain.

    python -m tests.perf.proposals.serve_patched PATCH[,PATCH...] serve --config ... --host ... --port ...

Patches (each mirrors a change proposed in the issue-8 report and not applied; nothing on disk is changed;
the earlier `coalesce` and `rank` proposals are now part of the gateway):
  noledger  the ledger kept in memory (not durable): `--proposals "" noledger` gives the ledger's cost
  nowait    a non-streamed response does not wait for its completed ledger row to be durable (the in-flight row
            opened before the upstream call still is)
  queuedledger  every PostgreSQL ledger write through the writer task's queue, as before lone writes were
            awaited by their caller (issue 16: `python -m tests.perf.run --replica-only --replica-ab queuedledger`)
  idlewaits not a change: each ledger write (the in-flight row, the completed row) followed by an idle wait of
            $BENCH_IDLE_WAIT_S seconds (default 0.0006, about a PostgreSQL commit here), no work in the process:
            the embedded path made to wait as often as the replica path does (`--proposals "" idlewaits`; issue 16)
  waitledger  not a change: the ledger's writes replaced by those idle waits (nothing written): the replica path
            without PostgreSQL's work but with its waits (`--replica-only --replica-ab waitledger`; issue 16)
  stages    not a change: CPU time (the serving thread's, time.thread_time) of each stage of the request path,
            written as JSON to $BENCH_STAGES_OUT at exit; meaningful at concurrency 1, where nothing else runs
            while a stage awaits (issue 16)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def nowait() -> None:
    from gateway import pipeline

    original = pipeline.Pipeline._respond

    async def _respond(self: Any, d: Any, result: Any, parsed: Any, books: Any, n: int, base: Any) -> Any:
        close = books.close

        async def close_nowait(*a: Any, **kw: Any) -> Any:
            kw["wait"] = False
            return await close(*a, **kw)

        books.close = close_nowait
        return await original(self, d, result, parsed, books, n, base)

    pipeline.Pipeline._respond = _respond  # type: ignore[method-assign]


def queuedledger() -> None:
    from gateway.ledger import engine_sink

    init = engine_sink.EngineSink.__init__

    def __init__(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        self.writes_direct = False

    engine_sink.EngineSink.__init__ = __init__  # type: ignore[method-assign]


def noledger() -> None:
    """Not a proposal: the gateway with an in-memory ledger, to measure what the durable ledger costs (issue 4)."""
    from gateway import app
    from gateway.ledger.base import MemoryLedger

    original = app.build_services

    async def build_services(config: Any, **overrides: Any) -> Any:
        overrides.setdefault("ledger", MemoryLedger())
        return await original(config, **overrides)

    app.build_services = build_services  # type: ignore[assignment]


def _ledger_waits(write_too: bool) -> None:
    import os

    from gateway import app

    wait_s = float(os.environ.get("BENCH_IDLE_WAIT_S", "0.0006"))
    original = app.build_services

    def waiting(write: Any) -> Any:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            if write_too:
                await write(*a, **kw)
            await asyncio.sleep(wait_s)

        return wrapper

    async def build_services(config: Any, **overrides: Any) -> Any:
        s = await original(config, **overrides)
        s.ledger.open = waiting(s.ledger.open)
        s.ledger.finish = waiting(s.ledger.finish)
        return s

    app.build_services = build_services  # type: ignore[assignment]


def idlewaits() -> None:
    _ledger_waits(write_too=True)


def waitledger() -> None:
    _ledger_waits(write_too=False)


def stages() -> None:
    """Wrap each awaited stage of the request path with a CPU-time counter (the serving thread's)."""
    import atexit
    import json
    import os
    import time

    from gateway import app

    totals: dict[str, list[float]] = {}
    original = app.build_services

    def timed(name: str, fn: Any) -> Any:
        slot = totals.setdefault(name, [0.0, 0])

        async def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return await fn(*a, **kw)
            finally:
                slot[0] += time.thread_time() - t0
                slot[1] += 1

        return wrapper

    async def build_services(config: Any, **overrides: Any) -> Any:
        s = await original(config, **overrides)
        # Settlements are not a stage: they leave after the response, in the background (gateway/limits/settler.py),
        # and their CPU is the outbox's share of the whole process (`python -m tests.perf.admission_ab` in process).
        for name, obj, attr in (("auth (key lookup)", s.auth, "authenticate"),
                                ("admission (rate limit + budget reserve)", s.admission, "admit"),
                                ("ledger open (in-flight row)", s.ledger, "open"),
                                ("ledger finish (completed row)", s.ledger, "finish"),
                                ("prefix cache lookup", s.prefix_cache, "lookup"),
                                ("health record_success", s.health, "record_success")):
            if obj is not None and hasattr(obj, attr):
                setattr(obj, attr, timed(name, getattr(obj, attr)))
        for pname, prov in s.providers.items():
            if hasattr(prov, "complete"):
                prov.complete = timed("vendor call (provider.complete)", prov.complete)
        return s

    app.build_services = build_services  # type: ignore[assignment]
    start_cpu = time.thread_time()

    def dump() -> None:
        out = os.environ.get("BENCH_STAGES_OUT")
        if out:
            with open(out, "w") as f:
                json.dump({"stages": totals, "thread_cpu_s": time.thread_time() - start_cpu}, f)

    atexit.register(dump)


PATCHES = {"nowait": nowait, "noledger": noledger, "stages": stages, "queuedledger": queuedledger,
           "idlewaits": idlewaits, "waitledger": waitledger}


def main() -> None:
    names = [n for n in sys.argv[1].split(",") if n]
    for name in names:
        PATCHES[name]()
    sys.argv = ["gateway", *sys.argv[2:]]
    from gateway.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
