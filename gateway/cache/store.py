"""Where the gateway remembers which prefixes it sent to which deployment, and when: in process or in Redis.

Both answer `found(hashes)` -> {probe position: {deployment: sent_at}} for a request's probed boundary hashes;
the model (`gateway.decisions.prefix_cache`) decides what that means. Times are wall-clock seconds
(`time.time()`), so replicas agree on ages.

Local: one index hash -> {deployment: sent_at}, with an LRU of each deployment's hashes bounding it
(`max_entries` per deployment). Redis (P = `gateway.redis_prefix`):
  P pc:<hash hex>   HASH "<provider>\\t<model>" -> sent_at, expiring after the longest TTL written to it
A lookup is one pipelined round trip (HGETALL per probed hash); a write is one pipeline, sent in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Iterable, Protocol, Sequence

from gateway.domain import DeploymentKey

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
        got = list(map(self._index.get, hashes))
        if not any(got):  # (the common case of a new conversation: no Python step per probe)
            return {}
        return {i: e for i, e in enumerate(got) if e}

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


def _field(key: DeploymentKey) -> str:
    return f"{key[0]}\t{key[1]}"


class RedisPrefixStore:
    def __init__(self, redis: Any, prefix: str) -> None:
        self._r = redis
        self._p = f"{prefix}pc:"
        self._keys: dict[str, DeploymentKey] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, h: int) -> str:
        return f"{self._p}{h & _MASK:016x}"

    async def found(self, hashes: Sequence[int]) -> Found:
        pipe = self._r.pipeline(transaction=False)
        for h in hashes:
            pipe.hgetall(self._key(h))
        replies = await pipe.execute()
        out: Found = {}
        for i, reply in enumerate(replies):
            if not reply:
                continue
            e: dict[DeploymentKey, float] = {}
            for f, v in reply.items():
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

    async def remember(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, ttl_s: float,
                       max_entries: int) -> None:
        pipe = self._r.pipeline(transaction=False)
        field, value, ttl = _field(key), repr(sent_at), max(1, int(ttl_s + 1))
        for h in hashes:
            k = self._key(h)
            pipe.hset(k, field, value)
            pipe.expire(k, ttl, nx=True)  # a new key gets a TTL ...
            pipe.expire(k, ttl, gt=True)  # ... and an existing one is only ever extended
        await pipe.execute()

    async def forget(self, key: DeploymentKey, hashes: Iterable[int]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for h in hashes:
            pipe.hdel(self._key(h), _field(key))
        await pipe.execute()

    def in_background(self, call: Any) -> None:
        """Run a write without holding up the response; a failure is logged (the model only loses a hint)."""
        task = asyncio.get_running_loop().create_task(_logged(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _logged(call: Any) -> None:
    try:
        await call
    except Exception:
        log.warning("prefix cache write to Redis failed", exc_info=True)
