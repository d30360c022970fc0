"""Whether Redis answers, for the budgets and rate limits that keep holding while it does not
(`on_shared_state_unavailable: degrade`, gateway/limits/degrade.py).

`SharedState` watches Redis for the request path: every call the wrappers in gateway/limits/degrade.py make goes through `call`, bounded
by `deadline_s`; the first one that fails (refused, reset, timed out) puts this replica in *degraded* mode, where
nothing waits on Redis any more. A background task pings Redis every `probe_s`; once it answers, the spending done
meanwhile is reconciled into Redis and only then does the replica return to the shared counters. While Redis is
up, the same task registers this replica in `P replicas` (a sorted set: replica id -> last seen, ms) and counts
those seen within `alive_s`: the number of replicas a degraded replica assumes share the budget with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

from gateway.state.redis_health import is_redis_outage
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)
T = TypeVar("T")


async def no_reconcile() -> None:
    return None


class Degraded(Exception):
    """Redis is unreachable: the caller falls back to its local share."""


class SharedState:
    def __init__(self, redis: Any, prefix: str, replica_id: str, *, deadline_s: float = 0.5, probe_s: float = 1.0,
                 alive_s: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._presence_key = f"{prefix}replicas"
        self._replica_id = replica_id
        self.deadline_s = deadline_s
        self.probe_s = self._probe_s = probe_s
        self._alive_s = alive_s
        self._clock = clock
        self.degraded = False
        self.degraded_since: float | None = None
        self.replicas_alive = 1
        self.outages = 0
        self._reconcilers: list[Callable[[], Awaitable[None]]] = []
        self._resumers: list[Callable[[], Awaitable[None]]] = []
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._peers: set[str] = set()  # replicas seen alive (this one included) while Redis answered
        self._task: asyncio.Task[None] | None = None

    def on_restore(self, reconcile: Callable[[], Awaitable[None]],
                   resume: Callable[[], Awaitable[None]] | None = None) -> None:
        """`reconcile` runs on every probe that reaches Redis while degraded (idempotent: it pushes what was
        spent locally since); `resume` once, when the replica returns to the shared counters."""
        self._reconcilers.append(reconcile)
        if resume is not None:
            self._resumers.append(resume)

    def on_tick(self, refresh: Callable[[], Awaitable[None]]) -> None:
        self._refreshers.append(refresh)

    async def call(self, make: Callable[[], Awaitable[T]], *, bounded: bool = False) -> T:
        """Run one Redis operation within the deadline, or raise Degraded (and enter degraded mode). `bounded`:
        the operation gives up within `deadline_s` on its own (gateway/state/connections.py), so no timer of
        ours is needed (one costs ~10 us of CPU per call)."""
        if self.degraded:
            raise Degraded()
        try:
            if bounded:
                return await make()
            async with asyncio.timeout(self.deadline_s):
                return await make()
        except Exception as e:
            if not is_redis_outage(e):
                raise
            self.degrade(e)
            raise Degraded() from e

    def degrade(self, error: BaseException | None = None) -> None:
        if not self.degraded:
            self.degraded, self.degraded_since = True, self._clock()
            self.outages += 1
            log.error("Redis unreachable (%s): budgets and rate limits continue on this replica's local share "
                      "(1/%d)", type(error).__name__ if error else "probe", self.replicas_alive)

    # ------------------------------------------------------------------------------------- background
    async def start(self) -> None:
        with contextlib.suppress(Exception):
            self._peers = await self._presence()
        self._task = asyncio.create_task(self._run(), name="shared-state-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            try:
                if self.degraded:
                    await self._try_restore()
                else:
                    async with asyncio.timeout(max(self.deadline_s, 1.0)):
                        self._peers = await self._presence()
                    for refresh in self._refreshers:
                        await refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_redis_outage(e):
                    self.degrade(e)
                else:
                    log.exception("shared state watch failed")

    async def _try_restore(self) -> None:
        """Redis answers again: push this replica's local spending, announce it, and return to the shared counters
        only once every replica that was alive before the outage has done the same (or is gone): until then a
        peer still spending its local share would be invisible to the shared counters."""
        async with asyncio.timeout(max(self.deadline_s, 1.0)):
            await self._redis.ping()
        for reconcile in self._reconcilers:
            await reconcile()
        since_ms = int((self.degraded_since or self._clock()) * 1000)
        async with asyncio.timeout(max(self.deadline_s, 1.0)):
            await self._presence()  # after reconciling: our presence since the outage means "reconciled"
            seen = await self._redis.zrange(self._presence_key, 0, -1, withscores=True)
        scores = {(m.decode() if isinstance(m, bytes) else m): float(score) for m, score in seen}
        waiting = [p for p in self._peers if p in scores and scores[p] < since_ms]
        if waiting:
            log.info("Redis is back; waiting for %d replica(s) to reconcile before leaving the local shares",
                     len(waiting))
            return
        for resume in self._resumers:
            await resume()
        log.warning("Redis is back after %.1fs; local spending reconciled",
                    self._clock() - (self.degraded_since or self._clock()))
        self.degraded, self.degraded_since = False, None

    async def _presence(self) -> set[str]:
        """Register this replica (last seen now) and count those seen within `alive_s`; returns their ids."""
        now_ms = int(self._clock() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._presence_key, {self._replica_id: now_ms})
        pipe.zremrangebyscore(self._presence_key, "-inf", now_ms - int(self._alive_s * 1000))
        pipe.zrange(self._presence_key, 0, -1)
        pipe.expire(self._presence_key, int(self._alive_s * 4))
        result = await pipe.execute()
        self.replicas_alive = max(1, len(result[2]))
        return {m.decode() if isinstance(m, bytes) else m for m in result[2]}
