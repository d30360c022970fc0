"""Keeps every replica's key cache current, so a revocation is in force everywhere at once.

With Redis (key layout, P = `gateway.redis_prefix`):
  P + "keys:revoked"   SET of revoked key ids (permanent; small). Read in full on every (re)subscribe, so a
                       replica that missed a message while disconnected catches up before serving again.
  P + "keys:events"    pub/sub channel; messages "revoked:<key id>" and "changed:<key id or team>".
A revocation is written to the database, then SADD + PUBLISH; subscribers drop the key from their cache as the
message arrives (milliseconds). The database is also reloaded every `reload_s` as a safety net.
Without Redis there is no other process to tell except workers sharing the database: reload every `reload_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.keys.store import KeyStore
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)


async def publish_event(redis: Any, prefix: str, event: str, subject: str) -> None:
    """Tell every replica: `revoked` (key id; also kept in the revoked-set) or `changed` (reload the cache).
    Used by the store on a replica and by the `gateway keys` CLI, which runs outside any replica."""
    if event == "revoked":
        await redis.sadd(f"{prefix}keys:revoked", subject)
    await redis.publish(f"{prefix}keys:events", f"{event}:{subject}")


class KeySync:
    def __init__(self, store: KeyStore, redis: Any | None = None, *, prefix: str = "gw:",
                 reload_s: float | None = None) -> None:
        self._store = store
        self._redis: Any = redis
        self._prefix = prefix
        self._revoked_key = f"{prefix}keys:revoked"
        self._channel = f"{prefix}keys:events"
        self._reload_s = reload_s if reload_s is not None else (30.0 if redis is not None else 1.0)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        await self._store.reload()
        if self._redis is not None:
            self._store.set_publisher(self._publish)
            self._store.mark_revoked(await self._members())
        self._task = asyncio.create_task(self._run(), name="key-sync")
        if self._redis is not None:
            # Serve only once subscribed, so no revocation can slip between start-up and the subscription.
            await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._store.set_publisher(None)

    async def _members(self) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else m for m in await self._redis.smembers(self._revoked_key)]

    async def _publish(self, event: str, subject: str) -> None:
        try:
            await publish_event(self._redis, self._prefix, event, subject)
        except Exception as e:
            # Stored in the database already: other replicas read it there (every second while Redis is
            # unreachable, and on re-subscribing), so the change is not lost, only later.
            log.warning("key change %s not published on Redis (%s); replicas pick it up from the database",
                        event, type(e).__name__)

    async def _run(self) -> None:
        while True:
            try:
                if self._redis is None:
                    await asyncio.sleep(self._reload_s)
                    await self._store.reload()
                else:
                    await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep serving from the cache; retry shortly
                log.warning("key cache refresh failed: %s", type(e).__name__)
                await asyncio.sleep(1.0)
                if self._redis is not None:
                    # Redis unreachable: revocations still reach us through the database meanwhile.
                    with contextlib.suppress(Exception):
                        await self._store.reload()

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            # Catch up on whatever happened while we were not subscribed.
            self._store.mark_revoked(await self._members())
            await self._store.reload()
            self._ready.set()
            loop = asyncio.get_running_loop()
            next_reload = loop.time() + self._reload_s
            while True:
                timeout = max(0.0, next_reload - loop.time())
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                if msg is not None and msg.get("type") == "message":
                    await self._handle(msg["data"])
                if loop.time() >= next_reload:
                    await self._store.reload()
                    next_reload = loop.time() + self._reload_s
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _handle(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        event, _, subject = text.partition(":")
        if event == "revoked":
            self._store.mark_revoked([subject])
        elif event == "changed":
            await self._store.reload()
