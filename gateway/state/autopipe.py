"""Redis commands of concurrent requests sent together: one pipeline per event-loop pass (auto-pipelining).

Every request on the replica path talks to Redis (admission, settlement). Sent one by one, each command takes a
pool connection, a write system call and a wake-up for its reply: under load, most of the gateway's Redis CPU
(tests/perf/FINDINGS.md). Here a command is queued with a future; the first one queued in a loop pass starts a
flush task, which runs once the pass is over (so every command queued meanwhile rides along) and sends the lot as
ONE non-transactional pipeline on one connection: one write, one reply stream. Commands queued while a flush is in
flight form the next batch. An awaited command with nothing else in flight goes out at once, on its own (a lone
request would pay a task hop and a pipeline for nothing: ~35% more CPU per call); the commands that come while it
is out are batched.

Semantics are those of sending the commands one by one on one connection, in queue order: each command's reply
or error goes to its own caller (`raise_on_error=False`), and a connection failure fails every command of that
batch with the same error (callers see redis-py's exceptions, as with a direct call). Nothing is retried here:
a command's caller decides (the budget scripts are idempotent by request id).
"""

from __future__ import annotations

import asyncio
from typing import Any

_MAX_BATCH = 512


class AutoPipeline:
    def __init__(self, redis: Any, *, max_batch: int = _MAX_BATCH) -> None:
        self._redis = redis
        self._max = max_batch
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._inline = False  # a lone command is out on its own
        self.batches = 0  # pipelines sent (tests and benchmarks read it)

    def send(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command (as for `execute_command`); its future resolves to the reply."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, fut))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return fut

    async def call(self, *args: Any) -> Any:
        if self._flusher is None and not self._inline:
            self._inline = True
            try:
                return await self._redis.execute_command(*args)
            finally:
                self._inline = False
        return await self.send(*args)

    async def drain(self) -> None:
        """Until everything queued so far has been sent and answered."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max:]
                await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        self.batches += 1
        pipe = self._redis.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the connection failed (or this task was cancelled): every caller hears it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else ConnectionError("cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        for (_, fut), reply in zip(batch, replies):
            if fut.done():  # its caller gave up (cancelled): the command ran anyway
                continue
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def register_script(self, text: str) -> AutoScript:
        """A Lua script called through this pipeline, as redis-py's `register_script` (keys=, args=)."""
        return AutoScript(self, text)


class AutoScript:
    """EVALSHA through an `AutoPipeline`; a Redis that lost its scripts (restarted) gets it loaded again, once."""

    def __init__(self, pipe: AutoPipeline, text: str) -> None:
        import hashlib

        self._pipe = pipe
        self.script = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, keys: list[Any] | tuple[Any, ...] = (), args: list[Any] | tuple[Any, ...] = ()) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await self._pipe.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._pipe.call("SCRIPT", "LOAD", self.script)
            return await self._pipe.call("EVALSHA", self.sha, len(keys), *keys, *args)
