"""Redis writes that need not hold up a response, sent in batches: everything queued while the event loop ran one
iteration of requests (or while the previous batch was on the wire) goes as one pipeline, one round trip.

Its writers: the settlements and tpm corrections of finished requests (gateway/limits/settler.py). A write says what to send (`commands`) and what to do with its
replies (`done`: error replies arrive as exception instances) or with their absence (`failed`: Redis unreachable
or too slow; some of its commands may have run). The outbox never sends a command twice on its own (only the
writer knows whether that is safe) with one exception: a script Redis no longer holds (NOSCRIPT: it restarted or
was flushed) did not run; the outbox loads it and sends those calls again.

`guard` is the degrade mode's `SharedState.call` (its deadline, and `Degraded` at once while Redis is known to be
down); without it a batch has the connections' deadline (gateway/state/connections.py), so a hung Redis cannot
hold writes forever.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar, Union

from redis.exceptions import NoScriptError

from gateway.state.connections import RedisConnections

log = logging.getLogger(__name__)
T = TypeVar("T")
Guard = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """EVALSHA of a registered script (redis-py's `register_script` object: its sha and its text)."""

    script: Any
    keys: Sequence[Any]
    args: Sequence[Any]


Command = Union[tuple[Any, ...], ScriptCall]


class Write(Protocol):
    def commands(self) -> Sequence[Command]: ...

    def done(self, replies: list[Any]) -> None: ...

    def failed(self, error: BaseException) -> None: ...


def _wire(command: Command) -> Sequence[Any]:
    if isinstance(command, ScriptCall):
        return ("EVALSHA", command.script.sha, len(command.keys), *command.keys, *command.args)
    return command


def _safely(call: Callable[..., None], arg: Any) -> None:
    try:
        call(arg)
    except Exception:  # one writer's bug must not cost the other writes of the batch their replies
        log.exception("Redis outbox: a write's callback failed")


class RedisOutbox:
    def __init__(self, connections: RedisConnections, *, guard: Guard | None = None) -> None:
        self._connections = connections
        self._guard = guard
        self._queue: list[Write] = []
        self._later: dict[asyncio.TimerHandle, Write] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def put(self, write: Write) -> None:
        """Queue a write; it leaves with the next batch (one loop iteration from now at the latest)."""
        self._queue.append(write)
        if self._task is None:
            loop = self._loop
            if loop is None or loop.is_closed():
                loop = self._loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run())

    def put_later(self, write: Write, delay_s: float) -> None:
        """Queue a write after `delay_s` (a writer's retry); `drain` sends it at once."""
        loop = self._loop or asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def due() -> None:
            self._later.pop(handle, None)  # type: ignore[arg-type]
            self.put(write)

        handle = loop.call_later(delay_s, due)
        self._later[handle] = write

    @property
    def pending(self) -> int:
        """Writes queued, on the wire or waiting to retry."""
        return len(self._queue) + len(self._later) + (self._task is not None)

    async def drain(self) -> None:
        """Send everything queued now and wait for it (writes waiting to retry are tried once more now): at
        shutdown, and for whoever must read Redis after a response's writes have landed."""
        for handle, write in list(self._later.items()):
            handle.cancel()
            self._later.pop(handle, None)
            self.put(write)
        while self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """`drain`, then report what could still not be sent (a retry that failed again is given up)."""
        await self.drain()
        if self._later:
            log.error("Redis outbox: %d write(s) could not be sent before shutdown", len(self._later))
            for handle in self._later:
                handle.cancel()
            self._later.clear()

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self.flush(batch)
        finally:
            self._task = None

    async def flush(self, batch: list[Write]) -> None:
        """Send `batch` as one pipeline and hand each write its replies (or the failure)."""
        plans = [(w, list(w.commands())) for w in batch]
        replies = await self._send([c for _, cmds in plans for c in cmds], [w for w, _ in plans])
        if replies is None:
            return
        i = 0
        for w, cmds in plans:
            mine, i = replies[i:i + len(cmds)], i + len(cmds)
            _safely(w.done, mine)

    async def _send(self, commands: list[Command], writes: list[Write]) -> list[Any] | None:
        try:
            replies = await self._execute(commands)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:  # Redis lost its scripts: those calls did not run
                for script in {id(commands[i].script): commands[i].script for i in missing}.values():  # type: ignore[union-attr]
                    await self._connections.call("SCRIPT", "LOAD", script.script)
                again = await self._execute([commands[i] for i in missing])
                for i, r in zip(missing, again):
                    replies[i] = r
            return replies
        except Exception as e:
            for w in writes:
                _safely(w.failed, e)
            return None

    async def _execute(self, commands: list[Command]) -> list[Any]:
        wire = [_wire(c) for c in commands]

        def run() -> Awaitable[list[Any]]:
            return self._connections.execute(wire)

        if self._guard is not None:
            guarded: list[Any] = await self._guard(run)
            return guarded
        return await run()
