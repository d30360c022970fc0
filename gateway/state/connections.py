"""The request path's Redis calls, on redis-py connections without the client and pool layers around each call.

Every request with limits or a budget makes one Redis round trip on its path (the admission script) and one in
the background (its share of a settlement batch). Through `redis.asyncio.Redis`, each call also pays for the
blocking pool's checkout (a Condition, a timeout), the retry wrapper, the observability hooks and, for a
pipeline, the pipeline object; and, with the socket timeout redis-py 8 sets by default, an `asyncio.wait_for`
task per send and a timeout per reply. Measured on this machine (`python -m tests.perf.admission_ab`, its "call"
rows): about 70 us of CPU per EVALSHA and 110 us per 4-command pipeline, against 24 and 30 us here (0.35-0.45x).
The wire work stays redis-py's: its `Connection` packs the commands, connects (AUTH, SELECT, HELLO as configured on
the client's pool), parses the replies (hiredis) and disconnects on any error; only the checkout is this module's.

- A call takes an idle connection (checked as redis-py's pool checks one: it must have nothing to read, which
  also catches one the server closed), or opens a new one, at most `max_connections` at once (then it waits for
  one, as the blocking pool does).
- Anything that goes wrong during a call (a reset, a timeout, a cancellation by the caller's deadline) closes that
  connection: a reply left unread would otherwise answer the next caller. An error *reply* does not: it is read.
- A call's deadline is the client's socket timeout (redis-py's default: 5 s), once around the whole exchange.
- Nothing is retried here: the admission script is not idempotent, so whether to try again is the caller's
  decision (the degrade mode's local shares, a 503, or a settlement's retry).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Sequence

from redis.exceptions import NoScriptError, ResponseError

DEFAULT_MAX_CONNECTIONS = 64


class RedisConnections:
    def __init__(self, redis: Any, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        pool = redis.connection_pool  # only for the client's settings
        self._make = pool.connection_class
        # Without a socket timeout, redis-py sends through asyncio.wait_for (a task per send) and reads under a
        # timeout per reply; one deadline around the whole call does the same job (`deadline_s`).
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self.deadline_s: float | None = pool.connection_kwargs.get("socket_timeout")
        self._max = max_connections
        self._idle: deque[Any] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[Any]] = deque()

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send `commands` in one write and read their replies, in order; an error reply is returned in its place
        (as redis-py's pipelines do with raise_on_error=False)."""
        conn = await self._take()
        try:
            if self.deadline_s is None:
                out = await self._exchange(conn, commands)
            else:
                async with asyncio.timeout(self.deadline_s):
                    out = await self._exchange(conn, commands)
        except BaseException:
            await conn.disconnect(nowait=True)
            self._give_back(conn)
            raise
        self._give_back(conn)
        return out

    @staticmethod
    async def _exchange(conn: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if conn.is_connected and await conn.can_read():  # data nobody asked for, or closed by the server
            await conn.disconnect()
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(await conn.read_response())
            except ResponseError as e:  # the reply was read: the connection is still in step
                out.append(e)
        return out

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
        while self._idle:
            await self._idle.pop().disconnect()

    async def _take(self) -> Any:
        if self._idle:
            return self._idle.pop()
        if self._open < self._max:
            self._open += 1
            return self._make(**self._kwargs)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed a connection just as we gave up: pass it on
                self._give_back(waiter.result())
            raise

    def _give_back(self, conn: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)
