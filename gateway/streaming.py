"""Relaying an accepted upstream stream to the client, metering it, and billing it however it ends.

`StreamRelay` is the ASGI response of a stream. It reads the vendor's batches (one per network read) and writes
each straight to the client, in the request's own task: no pump task, no queue, no per-event hop. A client that
disconnects stops nothing but the writes: the vendor's output is still read to its end and billed (status
`client_disconnected`). A vendor that fails after the first byte ends the client's stream with an SSE error event
and no `[DONE]`; nothing is retried then. The batch that carries `[DONE]` also ends the client's body (one write,
not two); anything the vendor sends after it is still read and metered, and a vendor failing after it leaves the
request a success (the client has its whole answer). However the relay ends (even cancelled
by a server shutdown), the books are closed with the usage metered so far.

Learning that the client left: under uvicorn, `send` after a disconnect is a silent no-op (ASGI spec 2.3), and the
only standard signal is `http.disconnect` from `receive()`, which needs a task blocked on it for the whole stream.
`hot_post` therefore hands over the server's own `send`, and when its owner carries uvicorn's `disconnected` flag
the relay reads that flag; with any other server it runs that listening task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable, MutableMapping

from starlette.responses import Response

from gateway.accounting import RequestBooks
from gateway.decisions.fallback import BAD_RESPONSE
from gateway.dialects.base import ClientStream
from gateway.domain import Deployment
from gateway.http.responses import raw_headers
from gateway.providers.base import EventStream, UpstreamFailure

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVER_SEND = "gateway.server_send"  # scope key: the server's own `send`, set by hot_post
_CONTENT_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


class _ClientWatch:
    """Whether the client has gone: uvicorn's flag when the server exposes it, else a task listening on receive."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        owner = getattr(scope.get(SERVER_SEND), "__self__", None)
        self._owner = owner if isinstance(getattr(owner, "disconnected", None), bool) else None
        self._left = False
        self._listener: asyncio.Task[None] | None = None
        if self._owner is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(receive))

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._left = True

    def gone(self) -> bool:
        if self._owner is not None:
            return bool(self._owner.disconnected)
        return self._left

    def left(self) -> None:
        """A write failed: the client is gone whatever the server says."""
        self._left = True
        self._owner = None

    async def stop(self) -> None:
        task = self._listener
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class StreamRelay(Response):
    media_type = "text/event-stream"

    def __init__(self, books: RequestBooks, deployment: Deployment, events: EventStream,
                 batches: AsyncIterator[list[bytes]], first: list[bytes], client: ClientStream, attempts: int,
                 headers: dict[str, str]) -> None:
        # Not Response.__init__: the headers are known and lower-case; they are encoded once, here.
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = raw_headers(headers)
        self.raw_headers.append(_CONTENT_TYPE)
        self.books = books
        self.deployment = deployment
        self.events = events
        self.batches = batches
        self.first = first
        self.client = client
        self.attempts = attempts
        self.ttft_s = time.perf_counter() - books.started_perf
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = _ClientWatch(scope, receive)
        status, outcome, error_kind = "success", "success", None
        ended = False  # the client's body is complete: its end marker went out with the end of the body, in one write
        client = self.client
        try:
            await self._write(send, watch, {"type": "http.response.start", "status": 200,
                                            "headers": self.raw_headers})
            batch: list[bytes] | None = self.first
            batches = self.batches
            while batch is not None:
                out = client.relay(batch)  # after the end: still metered (billed), no longer sent
                if out and not ended:
                    ended = client.ended(batch)
                    await self._write(send, watch, {"type": "http.response.body", "body": out,
                                                    "more_body": not ended})
                batch = await anext(batches, None)
        except UpstreamFailure as f:
            # After `[DONE]` the client has its whole answer: a vendor that then fails (a connection reset on
            # close) has not failed this request, and an alert on upstream errors should not hear of it.
            if not ended:
                status, outcome, error_kind = "stream_error", "upstream_error", f.kind
        except asyncio.CancelledError:
            # Cancelled (a server shutting down past its grace period): bill what was metered, then stop.
            await self._close_events()
            await watch.stop()
            await self._bill("interrupted", "upstream_error", None)
            raise
        except Exception:  # a vendor that breaks its own protocol mid-stream
            if not ended:
                status, outcome, error_kind = "stream_error", "upstream_error", BAD_RESPONSE
        await self._close_events()
        try:
            if error_kind is not None:
                self.books.services.metrics.record_upstream_error(self.deployment.provider, error_kind)
            if not ended:
                if error_kind is not None:
                    message = f"upstream {self.deployment.provider} failed mid-stream ({error_kind})"
                    tail = client.fail(message, error_kind)
                else:
                    tail = client.finish()
                await self._write(send, watch, {"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            await watch.stop()
            if self.client_gone and status == "success":
                status = "client_disconnected"
            await self._bill(status, outcome, error_kind)

    async def _write(self, send: Send, watch: _ClientWatch, message: Message) -> None:
        """Send unless the client has gone; a client that goes is noted, and the vendor is still read to its end."""
        if self.client_gone:
            return
        if watch.gone():
            self.client_gone = True
            return
        try:
            await send(message)
        except Exception:  # ASGI spec 2.4 servers raise (OSError) on a closed connection
            watch.left()
            self.client_gone = True

    async def _close_events(self) -> None:
        try:
            await self.events.aclose()
        except Exception:
            pass

    async def _bill(self, status: str, outcome: str, error_kind: str | None) -> None:
        usage = self.client.final_usage(self.books.prompt_estimate, self.books.services.tokens)
        await self.books.close(self.deployment, status, outcome, usage=usage, attempts=self.attempts,
                               ttft_s=self.ttft_s, error_kind=error_kind, wait=False)
