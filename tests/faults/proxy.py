"""A fault-injecting TCP proxy on loopback, for putting between the gateway and a vendor in tests.

It relays bytes both ways until told to misbehave. A fault applies per HTTP request, not per connection: the
gateway keeps connections alive, so the proxy takes the current fault when a request's first bytes arrive on a
connection (a new request is the first client bytes after the previous response started; HTTP/1.1 clients do
not pipeline). `set(fault, count=N)` affects the next N requests, then the proxy relays again.

Faults:
  delay      hold the request `delay_s` before forwarding it (a vendor slower than the gateway's timeout)
  drip       relay the answer one byte at a time, `delay_s` apart (slow, but complete)
  cut        close the connection as soon as the request arrives, no answer (FIN)
  reset      abort the connection with a TCP RST as soon as the request arrives
  garbage    answer bytes that are not HTTP at all, then close
  not_json   answer `200 OK` with a body that is not JSON (an HTML error page, as proxies in front of vendors do)
  truncate   relay the answer up to (not including) its `events`-th SSE `data:` event, then close: `events=1`
             cuts a stream after its headers, before any event; a larger number cuts it mid-stream
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

FAULTS = ("pass", "delay", "drip", "cut", "reset", "garbage", "not_json", "truncate")

GARBAGE = b"\x00\xff\xfeSSH-2.0-not-http\r\n\r\n\x13\x37"
NOT_JSON_BODY = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
NOT_JSON = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(NOT_JSON_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + NOT_JSON_BODY)


@dataclass(frozen=True)
class Fault:
    kind: str = "pass"
    delay_s: float = 0.0
    events: int = 1


class FaultProxy:
    """`with FaultProxy(upstream_port) as p:` listens on `p.port`; `p.set("reset", count=1)`."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._fault = Fault()
        self._remaining: int | None = None
        self.taken: list[str] = []  # the fault each request got, in order
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    # ---- control (any thread) -------------------------------------------------------------------------------

    def set(self, kind: str, *, delay_s: float = 0.0, events: int = 1, count: int | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._fault = Fault(kind, delay_s, events)
            self._remaining = count

    def _take(self) -> Fault:
        with self._lock:
            fault = self._fault
            if fault.kind != "pass" and self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self._fault, self._remaining = Fault(), None
            self.taken.append(fault.kind)
            return fault

    # ---- relay ---------------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        state: dict[str, Any] = {"fault": Fault(), "new_request": True}
        tasks = [asyncio.ensure_future(self._client_to_upstream(reader, writer, up_writer, state)),
                 asyncio.ensure_future(self._upstream_to_client(up_reader, writer, state))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                if not w.is_closing():
                    w.close()

    async def _client_to_upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                  up_writer: asyncio.StreamWriter, state: dict[str, Any]) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if state["new_request"]:
                state["new_request"] = False
                state["seen"] = b""
                fault = state["fault"] = self._take()
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_s)
                elif fault.kind == "cut":
                    writer.close()
                    return
                elif fault.kind == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                elif fault.kind in ("garbage", "not_json"):
                    writer.write(GARBAGE if fault.kind == "garbage" else NOT_JSON)
                    await writer.drain()
                    writer.close()
                    return
            up_writer.write(data)
            await up_writer.drain()

    async def _upstream_to_client(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                  state: dict[str, Any]) -> None:
        while True:
            data = await up_reader.read(65536)
            if not data:
                return
            state["new_request"] = True  # the answer has started: the client's next bytes are a new request
            fault: Fault = state["fault"]
            if fault.kind == "drip":
                for i in range(len(data)):
                    writer.write(data[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(fault.delay_s)
                continue
            if fault.kind == "truncate":
                seen = state["seen"] + data
                cut = _nth(seen, b"data:", fault.events)
                if cut >= 0:
                    writer.write(data[: len(data) - (len(seen) - cut)])
                    await writer.drain()
                    writer.close()
                    return
                state["seen"] = seen
            writer.write(data)
            await writer.drain()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def _nth(data: bytes, marker: bytes, n: int) -> int:
    """Index of the n-th occurrence (1-based) of `marker` in `data`, or -1."""
    at = -1
    for _ in range(n):
        at = data.find(marker, at + 1)
        if at < 0:
            return -1
    return at
