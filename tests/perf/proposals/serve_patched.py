"""`gateway serve` with proposed changes to files outside tests/perf applied in memory, to measure their gain.

    python -m tests.perf.proposals.serve_patched PATCH[,PATCH...] serve --config ... --host ... --port ...

Patches (each mirrors a diff proposed in the issue-8 report; nothing on disk is changed):
  coalesce  streaming.StreamRelay.body writes every already-queued event in one chunk
  rank      pipeline uses tests/perf/proposals/routing_fast.rank
  nowait    a non-streamed response does not wait for its completed ledger row to be durable (the in-flight row
            opened before the upstream call still is)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, AsyncIterator


def coalesce() -> None:
    from gateway import streaming
    from gateway.http.errors import error_payload
    from gateway.providers.sse import frame

    async def body(self: Any) -> AsyncIterator[bytes]:
        finished = False
        try:
            while True:
                item = await self.queue.get()
                out: list[bytes] = []
                done = False
                while True:  # whatever is already queued goes out in one write, not one write per event
                    if item is streaming._END:
                        done = True
                        break
                    if isinstance(item, streaming._StreamFailed):
                        done = True
                        message = f"upstream {self.deployment.provider} failed mid-stream ({item.kind})"
                        out.append(frame(error_payload(message, "upstream_stream_error")))
                        break
                    out.append(frame(item))
                    if self.queue.empty():
                        break
                    item = self.queue.get_nowait()
                if out:
                    yield b"".join(out)
                if done:
                    finished = True
                    return
        finally:
            if not finished:
                self.client_gone = True

    streaming.StreamRelay.body = body  # type: ignore[method-assign]


def rank() -> None:
    from gateway import pipeline
    from tests.perf.proposals import routing_fast

    pipeline.rank = routing_fast.rank  # type: ignore[attr-defined]


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


PATCHES = {"coalesce": coalesce, "rank": rank, "nowait": nowait}


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
