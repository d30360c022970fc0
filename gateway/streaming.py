"""Relaying an accepted upstream stream to the client, metering it, and billing it however it ends.

Reading the vendor and writing the client are decoupled by a queue: a background task (the pump) reads the
vendor to the end, meters, and closes the books; the response body only forwards what the pump queued. So a
client that disconnects mid-stream stops nothing: the vendor's output is still read and billed (status
`client_disconnected`). A vendor that fails after the first byte ends the client's stream with an SSE error
event and no `[DONE]`; nothing is retried then.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from gateway.accounting import RequestBooks
from gateway.decisions.fallback import BAD_RESPONSE
from gateway.domain import Deployment
from gateway.http.errors import error_payload
from gateway.metering import StreamMeter
from gateway.providers.base import EventStream, UpstreamFailure
from gateway.providers.sse import frame

_END = object()


class _StreamFailed:
    def __init__(self, kind: str) -> None:
        self.kind = kind


class StreamRelay:
    def __init__(self, books: RequestBooks, deployment: Deployment, events: EventStream,
                 payloads: AsyncIterator[bytes], first: bytes, meter: StreamMeter, attempts: int) -> None:
        self.books = books
        self.deployment = deployment
        self.events = events
        self.payloads = payloads
        self.first = first
        self.meter = meter
        self.attempts = attempts
        self.ttft_s = time.perf_counter() - books.started_perf
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.client_gone = False

    def start(self) -> None:
        self.books.services.spawn(self._pump())

    async def _pump(self) -> None:
        status, outcome, error_kind = "success", "success", None
        try:
            out = self.meter.feed(self.first)
            if out is not None:
                self.queue.put_nowait(out)
            async for payload in self.payloads:
                out = self.meter.feed(payload)
                if out is not None and not self.client_gone:
                    self.queue.put_nowait(out)
        except UpstreamFailure as f:
            status, outcome, error_kind = "stream_error", "upstream_error", f.kind
        except Exception:  # a vendor that breaks its own protocol mid-stream
            status, outcome, error_kind = "stream_error", "upstream_error", BAD_RESPONSE
        finally:
            try:
                await self.events.aclose()
            except Exception:
                pass
        if error_kind is not None:
            self.books.services.metrics.record_upstream_error(self.deployment.provider, error_kind)
            self.queue.put_nowait(_StreamFailed(error_kind))
        else:
            self.queue.put_nowait(_END)
        if self.client_gone and status == "success":
            status = "client_disconnected"
        usage = self.meter.final_usage(self.books.prompt_estimate, self.books.services.tokens)
        await self.books.close(self.deployment, status, outcome, usage=usage, attempts=self.attempts,
                               ttft_s=self.ttft_s, error_kind=error_kind, wait=False)

    async def body(self) -> AsyncIterator[bytes]:
        finished = False
        try:
            while True:
                item = await self.queue.get()
                out: list[bytes] = []
                done = False
                while True:  # whatever is already queued goes out in one write, not one write per event
                    if item is _END:
                        done = True
                        break
                    if isinstance(item, _StreamFailed):
                        done = True
                        message = f"upstream {self.deployment.provider} failed mid-stream ({item.kind})"
                        out.append(frame(error_payload(message, "upstream_stream_error")))
                        break
                    out.append(frame(item))  # type: ignore[arg-type]
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
