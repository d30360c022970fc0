"""Where the gateway remembers which prefixes it sent to which deployment, and when: in process or in Redis.

Both answer `found(hashes)` -> {probe position: {deployment: sent_at}} for a request's probed boundary hashes;
the model (`gateway.decisions.prefix_cache`) decides what that means. Times are wall-clock seconds
(`time.time()`), so replicas agree on ages.

Local: one index hash -> {deployment: sent_at}, with an LRU of each deployment's hashes bounding it
(`max_entries` per deployment). Redis (P = `gateway.redis_prefix`):
  P pc:<hash hex>   HASH "<provider>\\t<model>" -> sent_at, expiring after the longest TTL written to it
A lookup is one pipelined round trip (HGETALL per probed hash); writes are sent in the background, with the
settlements' batches when there is an outbox (gateway/state/outbox.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from gateway.domain import DeploymentKey
from gateway.state.connections import RedisConnections
from gateway.state.outbox import RedisOutbox

log = logging.getLogger(__name__)

Found = dict[int, dict[DeploymentKey, float]]
_MASK = (1 << 64) - 1


class PrefixStore(Protocol):
    async def found(self, hashes: Sequence[int]) -> Found:
        """For each position of `hashes` that some deployment was sent: those deployments and when."""

    async def remember(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, ttl_s: float,
                       max_entries: int) -> None: ...

    async def forget(self, key: DeploymentKey, hashes: Iterable[int]) -> None: ...


class LocalPrefixStore:
    def __init__(self) -> None:
        self._index: dict[int, dict[DeploymentKey, float]] = {}
        self._lru: dict[DeploymentKey, OrderedDict[int, None]] = {}

    def found_now(self, hashes: Sequence[int]) -> Found:
        index = self._index
        out: Found = {}
        for i, h in enumerate(hashes):
            e = index.get(h)
            if e:
                out[i] = e
        return out

    async def found(self, hashes: Sequence[int]) -> Found:
        return self.found_now(hashes)

    def remember_now(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, max_entries: int) -> None:
        lru = self._lru.get(key)
        if lru is None:
            lru = self._lru[key] = OrderedDict()
        index = self._index
        for h in hashes:
            e = index.get(h)
            if e is None:
                e = index[h] = {}
            e[key] = sent_at
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > max_entries:
            old, _ = lru.popitem(last=False)
            self._drop(old, key)

    async def remember(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, ttl_s: float,
                       max_entries: int) -> None:
        self.remember_now(key, hashes, sent_at, max_entries)

    def _drop(self, h: int, key: DeploymentKey) -> None:
        e = self._index.get(h)
        if e is not None:
            e.pop(key, None)
            if not e:
                del self._index[h]

    async def forget(self, key: DeploymentKey, hashes: Iterable[int]) -> None:
        self.forget_now(key, hashes)

    def forget_now(self, key: DeploymentKey, hashes: Iterable[int]) -> None:
        lru = self._lru.get(key)
        for h in hashes:
            self._drop(h, key)
            if lru is not None:
                lru.pop(h, None)

    def entries(self, key: DeploymentKey) -> int:
        """How many prefixes are remembered for a deployment (for tests and introspection)."""
        lru = self._lru.get(key)
        return len(lru) if lru is not None else 0


def _pairs(reply: Any) -> Iterable[tuple[Any, Any]]:
    """HGETALL's reply: a map (RESP3) or a flat field, value, ... list (RESP2)."""
    if isinstance(reply, dict):
        return reply.items()
    return zip(reply[::2], reply[1::2])


def _field(key: DeploymentKey) -> str:
    return f"{key[0]}\t{key[1]}"


class RedisPrefixStore:
    def __init__(self, redis: Any, prefix: str, outbox: RedisOutbox | None = None,
                 connections: RedisConnections | None = None) -> None:
        self._r = connections or RedisConnections(redis)
        self._p = f"{prefix}pc:"
        self._keys: dict[str, DeploymentKey] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox = outbox  # the request path's writes ride the settlements' batches (gateway/state/outbox.py)

    def _key(self, h: int) -> str:
        return f"{self._p}{h & _MASK:016x}"

    async def found(self, hashes: Sequence[int]) -> Found:
        replies = await self._r.execute([("HGETALL", self._key(h)) for h in hashes])
        out: Found = {}
        for i, reply in enumerate(replies):
            if not reply:
                continue
            if isinstance(reply, Exception):
                raise reply
            e: dict[DeploymentKey, float] = {}
            for f, v in _pairs(reply):
                f = f.decode() if isinstance(f, bytes) else f
                key = self._keys.get(f)
                if key is None:
                    provider, _, model = f.partition("\t")
                    key = self._keys[f] = (provider, model)
                try:
                    e[key] = float(v)
                except ValueError:
                    continue
            if e:
                out[i] = e
        return out

    def remember_commands(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float,
                          ttl_s: float) -> list[tuple[Any, ...]]:
        field, value, ttl = _field(key), repr(sent_at), max(1, int(ttl_s + 1))
        out: list[tuple[Any, ...]] = []
        for h in hashes:
            k = self._key(h)
            out += [("HSET", k, field, value),
                    ("EXPIRE", k, ttl, "NX"),  # a new key gets a TTL ...
                    ("EXPIRE", k, ttl, "GT")]  # ... and an existing one is only ever extended
        return out

    def forget_commands(self, key: DeploymentKey, hashes: Iterable[int]) -> list[tuple[Any, ...]]:
        return [("HDEL", self._key(h), _field(key)) for h in hashes]

    async def remember(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, ttl_s: float,
                       max_entries: int) -> None:
        await self._execute(self.remember_commands(key, hashes, sent_at, ttl_s))

    async def forget(self, key: DeploymentKey, hashes: Iterable[int]) -> None:
        await self._execute(self.forget_commands(key, hashes))

    async def _execute(self, commands: list[tuple[Any, ...]]) -> None:
        for reply in await self._r.execute(commands):
            if isinstance(reply, Exception):
                raise reply

    def later(self, commands: list[tuple[Any, ...]]) -> None:
        """Send writes without holding up the response: with the outbox's next batch, or as a task of their own.
        A failure is logged (the model only loses a hint)."""
        if not commands:
            return
        if self._outbox is not None:
            self._outbox.put(_Writes(commands))
            return
        task = asyncio.get_running_loop().create_task(_logged(self._execute(commands)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._outbox is not None:
            await self._outbox.drain()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Writes:
    """Prefix cache writes in the outbox: nothing to do with their replies; a failure only loses a hint."""

    batch: list[tuple[Any, ...]]

    def commands(self) -> list[tuple[Any, ...]]:
        return self.batch

    def done(self, replies: list[Any]) -> None:
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            log.warning("prefix cache write refused by Redis (%s)", type(errors[0]).__name__)

    def failed(self, error: BaseException) -> None:
        log.warning("prefix cache write to Redis failed (%s)", type(error).__name__)


async def _logged(call: Any) -> None:
    try:
        await call
    except Exception:
        log.warning("prefix cache write to Redis failed", exc_info=True)
