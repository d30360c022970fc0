"""`gateway serve` with proposed changes to files outside tests/perf applied in memory, to measure their gain.

    python -m tests.perf.proposals.serve_patched PATCH[,PATCH...] serve --config ... --host ... --port ...

Patches (each mirrors a change proposed in the issue-8 report and not applied; nothing on disk is changed;
the earlier `coalesce` and `rank` proposals are now part of the gateway):
  noledger  the ledger kept in memory (not durable): `--proposals "" noledger` gives the ledger's cost
  nowait    a non-streamed response does not wait for its completed ledger row to be durable (the in-flight row
            opened before the upstream call still is)
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


def noledger() -> None:
    """Not a proposal: the gateway with an in-memory ledger, to measure what the durable ledger costs (issue 4)."""
    from gateway import app
    from gateway.ledger.base import MemoryLedger

    original = app.build_services

    async def build_services(config: Any, **overrides: Any) -> Any:
        overrides.setdefault("ledger", MemoryLedger())
        return await original(config, **overrides)

    app.build_services = build_services  # type: ignore[assignment]


PATCHES = {"nowait": nowait, "noledger": noledger}


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
