"""The request path's Redis calls: every call of the process pipelined on one connection, each loop pass's commands
in one write.

Every request with limits or a budget makes one Redis round trip on its path (the admission script) and one in
the background (its share of a settlement batch). Through a pool of redis-py connections, each call took a
connection, packed its command in Python, wrote it with its own system call and woke for its own reply. Profiled
at concurrency 64 (`python -m tests.perf.profile --target replica --blocking`), that was ~100 us of CPU per request:
~24 in the socket writes (a loopback TCP send costs the sender the receiver's wake-up too), ~23 in redis-py's
packer, the rest in the pool, the stream reader and a deadline per call. Redis answers a connection's commands in
the order it reads them, so one connection carries everyone's: commands are packed by hiredis in C, queued, and
written once per loop pass; replies are parsed by hiredis as they arrive and handed to their callers in order.

- The connection is opened by redis-py's own `Connection` (TLS, AUTH, SELECT, HELLO, client name: whatever the
  client's URL asks for), then its socket is taken over by `_Link`.
- A caller that gives up (cancelled, or its own deadline) leaves its place in the queue; its replies are read and
  dropped, never handed to the next caller. Its commands still run (as they would once sent on any connection).
- A connection whose oldest unanswered command is older than the deadline (`deadline_s`: the shared state's in
  degrade mode, else the client's socket timeout) is closed, and every call waiting on it fails with
  `redis.exceptions.TimeoutError`; opening one is bounded by the same deadline. One closed by the
  server or the network fails them with `ConnectionError`. The next call opens a new one. Nothing is retried
  here: the admission script is not idempotent, so whether to try again is the caller's decision (the degrade
  mode's local shares, a 503, or a settlement's retry).
- Blocking commands (BLPOP, WAIT, ...) would hold everyone's replies: they are not for this connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Sequence

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_NOT_ENOUGH = object()
_PUSH = getattr(hiredis, "PushNotification", ())  # RESP3 out-of-band messages, never a reply


def pack(commands: Sequence[Sequence[Any]], fallback: Any) -> bytes:
    """The commands in RESP, packed by hiredis in C (~1 us for an admission's EVALSHA, against ~8 in redis-py's
    Python packer). The same bytes for what the path sends (str, bytes, int, float: a test compares them); what
    hiredis does not take the same way (a multi-word command name, a bool, a Decimal) goes through redis-py's
    packer (`fallback`, an unconnected redis-py connection), with its own checks and errors."""
    try:
        parts = []
        for cmd in commands:
            first = cmd[0]
            if not isinstance(first, str) or " " in first:
                raise TypeError
            parts.append(hiredis.pack_command(tuple(cmd)))
        return b"".join(parts)
    except TypeError:
        return b"".join(fallback.pack_commands(commands))


class _Call:
    __slots__ = ("future", "left", "replies", "due")

    def __init__(self, future: asyncio.Future[list[Any]], left: int, due: float) -> None:
        self.future, self.left, self.due = future, left, due
        self.replies: list[Any] = []


class _Link(asyncio.Protocol):
    """One connection taken over from redis-py: writes queued per loop pass, replies handed out in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Any, reader: Any, deadline_s: float | None) -> None:
        self._loop, self._transport, self._reader, self._deadline_s = loop, transport, reader, deadline_s
        self._calls: deque[_Call] = deque()
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self.streams: tuple[Any, ...] = ()
        self.closed = False

    def send(self, packed: bytes, replies: int) -> asyncio.Future[list[Any]]:
        future = self._loop.create_future()
        due = self._loop.time() + self._deadline_s if self._deadline_s is not None else 0.0
        self._calls.append(_Call(future, replies, due))
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        if self._timer is None and self._deadline_s is not None:
            self._timer = self._loop.call_at(due, self._check)
        return future

    def _flush(self) -> None:
        if not self.closed and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def data_received(self, data: bytes) -> None:
        reader, calls = self._reader, self._calls
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not _NOT_ENOUGH:
                if _PUSH and isinstance(reply, _PUSH):
                    continue
                if not calls:
                    raise InvalidResponse("a reply nobody asked for")
                call = calls[0]
                call.replies.append(reply)
                call.left -= 1
                if not call.left:
                    calls.popleft()
                    if not call.future.done():
                        call.future.set_result(call.replies)
        except Exception as e:  # a protocol error, or replies out of step: nothing after it can be trusted
            self.fail(RedisConnectionError(f"Redis connection out of step: {e}"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    def _check(self) -> None:
        self._timer = None
        if not self._calls or self.closed:
            return
        due = self._calls[0].due
        if due <= self._loop.time():
            self.fail(RedisTimeoutError(f"no reply from Redis within {self._deadline_s}s"))
        else:
            self._timer = self._loop.call_at(due, self._check)

    def fail(self, error: Exception) -> None:
        if not self.closed:
            self.closed = True
            self._transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._calls:
            future = self._calls.popleft().future
            if not future.done():
                future.set_exception(error)


class RedisConnections:
    def __init__(self, redis: Any, *, deadline_s: float | None = None) -> None:
        """`deadline_s`: how long a reply (or opening a connection) may take before the connection counts as
        lost; the client's socket timeout by default."""
        pool = redis.connection_pool  # only for the client's settings
        self._make = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)
        self._packer = self._make(**self._kwargs)  # never connected: packs what hiredis does not
        # The client's socket timeout as redis-py resolves it (its default, 5 s, when the URL sets none).
        self.deadline_s: float | None = deadline_s if deadline_s is not None else self._packer.socket_timeout
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link] | None = None
        self._open = 0  # connections opened so far
        self._closes = 0

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send `commands` together and read their replies, in order; an error reply is returned in its place
        (as redis-py's pipelines do with raise_on_error=False)."""
        if not commands:
            return []
        link = self._link
        if link is None or link.closed:
            link = await self._connect()
        return await link.send(pack(commands, self._packer), len(commands))

    async def call(self, *args: Any) -> Any:
        """One command; an error reply is raised."""
        (reply,) = await self.execute((args,))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def evalsha(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA of a `register_script` object; loads it first if Redis does not hold it (restarted, flushed)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", script.script)
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def close(self) -> None:
        self._closes += 1  # an opening still under way must not leave a connection behind (`_open_link`)
        if self._link is not None:
            self._link.fail(RedisConnectionError("closed"))
            self._link = None

    async def _connect(self) -> _Link:
        """One opening at a time: callers that arrive meanwhile wait for it (and share its failure)."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open_link(self._closes))
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Future[_Link]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self._link = opening.result()

    async def _open_link(self, closes: int) -> _Link:
        conn = self._make(**self._kwargs)
        try:
            async with asyncio.timeout(self.deadline_s):
                await conn.connect()  # redis-py's handshake: TLS, AUTH, SELECT, HELLO, client name
        except TimeoutError:
            conn._close()
            raise RedisTimeoutError(f"could not connect to Redis within {self.deadline_s}s") from None
        if self._closes != closes:
            conn._close()
            raise RedisConnectionError("closed while the connection was being opened")
        streams = conn._writer, conn._reader
        transport = streams[0].transport
        conn._writer = conn._reader = None  # the socket is the link's now: the connection must not close it
        self._open += 1
        encoding = {"encoding": conn.encoder.encoding, "errors": conn.encoder.encoding_errors} \
            if conn.encoder.decode_responses else {}
        reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error,
                                notEnoughData=_NOT_ENOUGH, **encoding)
        link = _Link(asyncio.get_running_loop(), transport, reader, self.deadline_s)
        link.streams = streams  # a stream writer closes its transport when it is collected
        transport.set_protocol(link)
        return link
