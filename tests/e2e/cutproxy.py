"""A TCP proxy the test controls, to take PostgreSQL or Redis away from a gateway and give it back.

Runs on its own event loop in a thread, so synchronous tests, async tests and soak scripts use it alike.
- `cut()`: every open connection is reset and new ones are refused (a crashed server, a closed port);
- `hang()`: open connections stop passing bytes and new ones are accepted but go nowhere (a partition: the
  client only learns by its own timeouts);
- `restore()`: new connections are forwarded again (what was cut or hung stays dead, as after a real outage).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any


class CutProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "up"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="cutproxy")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._server: asyncio.base_events.Server | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> CutProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -------------------------------------------------------------------------------------------- controls
    def cut(self) -> None:
        self._call(self._set("cut"))

    def hang(self) -> None:
        self._call(self._set("hang"))

    def restore(self) -> None:
        self._call(self._set("up"))

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---------------------------------------------------------------------------------------------- inside
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    async def _set(self, mode: str) -> None:
        was, self.mode = self.mode, mode
        if mode == "cut" or was == "hang":
            for client, upstream in list(self._conns):
                for w in (client, upstream):
                    if w is not None:
                        _abort(w)
            self._conns.clear()

    async def _shutdown(self) -> None:
        await self._set("cut")
        if self._server is not None:
            self._server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "cut":
            _abort(writer)
            return
        if self.mode == "hang":
            self._conns.add((writer, None))
            return  # accepted, never answered
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)
        self._conns.discard(pair)
        for w in pair:
            _abort(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while self.mode == "hang":  # a partition: bytes go nowhere until the connection is cut
                await asyncio.sleep(0.05)
            if self.mode == "cut":
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
