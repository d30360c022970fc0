"""Where the gateway remembers which prefixes it sent to which deployment, and when: in process, or in process and
replicated to every replica through Redis.

Both answer `found_now(hashes)` -> {probe position: {deployment: sent_at}} for a request's probed boundary hashes
from memory, with no I/O; the model (`gateway.decisions.prefix_cache`) decides what that means. Times are
wall-clock seconds (`time.time()`), so replicas agree on ages.

Local: one index hash -> {deployment: sent_at}, with an LRU of each deployment's hashes bounding it
(`max_entries` per deployment).

Shared (with Redis): the same index in each replica, kept in step by Redis pub/sub, so a lookup costs no round trip
(a round trip per request was most of the prefix cache's cost on the replica path: tests/perf/FINDINGS.md). What a
replica remembers or forgets is applied to its own index at once and queued; the queue goes out in the background
as ONE pipeline per event-loop pass (concurrent requests share it): a PUBLISH of every change, which the other
replicas apply when it arrives (a millisecond later; a conversation's next turn comes seconds later), and the same
prefixes written to Redis hashes, from which a replica that starts (or re-subscribes after losing Redis) loads what
the others sent before it listened. Redis layout (P = `gateway.redis_prefix`):
  P pc:<hash hex>   HASH "<provider>\\t<model>" -> sent_at, expiring after the longest TTL written to it
  channel P pc:events   {"from": replica, "ops": [["r", provider, model, sent_at, ttl_s, max_entries, [hash...]],
                                                  ["f", provider, model, [hash...]]]}
Losing Redis loses only hints: changes not published meanwhile are not seen by the other replicas (each keeps its
own), and the request path never waits on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

import orjson

from gateway.domain import DeploymentKey

log = logging.getLogger(__name__)

Found = dict[int, dict[DeploymentKey, float]]
_MASK = (1 << 64) - 1
_DEADLINE_S = 1.0  # a Redis that hangs must not pile up changes without bound
_MAX_QUEUED = 50_000  # changes waiting while Redis is slow or gone; beyond that they are dropped (hints only)
_LOAD_BATCH = 500

# One EVALSHA per remembered prefix instead of three commands per hash: set the field, give a new key the TTL and
# only ever extend an existing key's.
_REMEMBER = """
local ttl = tonumber(ARGV[3])
for _, k in ipairs(KEYS) do
  redis.call('HSET', k, ARGV[1], ARGV[2])
  local left = redis.call('TTL', k)
  if left < ttl then redis.call('EXPIRE', k, ttl) end
end
return #KEYS
"""


class LocalPrefixStore:
    def __init__(self) -> None:
        self._index: dict[int, dict[DeploymentKey, float]] = {}
        self._lru: dict[DeploymentKey, OrderedDict[int, None]] = {}

    def found_now(self, hashes: Sequence[int]) -> Found:
        got = list(map(self._index.get, hashes))
        if not any(got):  # (the common case of a new conversation: no Python step per probe)
            return {}
        return {i: e for i, e in enumerate(got) if e}

    def remember_now(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, ttl_s: float,
                     max_entries: int) -> None:
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

    def _drop(self, h: int, key: DeploymentKey) -> None:
        e = self._index.get(h)
        if e is not None:
            e.pop(key, None)
            if not e:
                del self._index[h]

    def forget_now(self, key: DeploymentKey, hashes: Iterable[int]) -> None:
        lru = self._lru.get(key)
        for h in hashes:
            self._drop(h, key)
            if lru is not None:
                lru.pop(h, None)

    def sent_at(self, h: int, key: DeploymentKey) -> float | None:
        e = self._index.get(h)
        return None if e is None else e.get(key)

    def entries(self, key: DeploymentKey) -> int:
        """How many prefixes are remembered for a deployment (for tests and introspection)."""
        lru = self._lru.get(key)
        return len(lru) if lru is not None else 0

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _field(key: DeploymentKey) -> str:
    return f"{key[0]}\t{key[1]}"


class SharedPrefixStore(LocalPrefixStore):
    """The local index, replicated to (and from) every replica on the same Redis and prefix."""

    def __init__(self, redis: Any, prefix: str, *, replica_id: str | None = None,
                 max_entries: Callable[[DeploymentKey], int] = lambda key: 10_000) -> None:
        super().__init__()
        self._r = redis
        self._p = f"{prefix}pc:"
        self.channel = f"{prefix}pc:events"
        self._me = replica_id or uuid.uuid4().hex
        self._max_entries = max_entries
        self._sha: str | None = None  # of _REMEMBER, loaded once (a pipeline with Script objects checks each time)
        self._out: list[list[Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._failing = False
        self.listening = asyncio.Event()  # set once subscribed and loaded (tests wait for it)

    # ---- the request path: memory only -------------------------------------------------------------------
    def found_now(self, hashes: Sequence[int]) -> Found:
        return super().found_now([h & _MASK for h in hashes])

    def remember_now(self, key: DeploymentKey, hashes: Iterable[int], sent_at: float, ttl_s: float,
                     max_entries: int) -> None:
        reduced = [h & _MASK for h in hashes]
        super().remember_now(key, reduced, sent_at, ttl_s, max_entries)
        self._queue(["r", key[0], key[1], sent_at, ttl_s, max_entries, reduced])

    def forget_now(self, key: DeploymentKey, hashes: Iterable[int]) -> None:
        reduced = [h & _MASK for h in hashes]
        super().forget_now(key, reduced)
        self._queue(["f", key[0], key[1], reduced])

    # ---- out: one pipeline per loop pass -----------------------------------------------------------------
    def _queue(self, op: list[Any]) -> None:
        if len(self._out) >= _MAX_QUEUED:
            return
        self._out.append(op)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._out:
                batch, self._out = self._out, []
                try:
                    async with asyncio.timeout(_DEADLINE_S):
                        await self._send(batch)
                except Exception as e:
                    if not self._failing:  # once per outage, not once per request
                        log.warning("prefix cache: changes not shared through Redis (%s); each replica keeps "
                                    "its own until it answers", type(e).__name__)
                    self._failing = True
                else:
                    self._failing = False
        finally:
            self._flusher = None

    async def _send(self, batch: list[list[Any]]) -> None:
        from redis.exceptions import NoScriptError

        for attempt in (1, 2):
            if self._sha is None:
                self._sha = await self._r.script_load(_REMEMBER)
            pipe = self._r.pipeline(transaction=False)
            if attempt == 1:  # a retry only re-sends the hashes: the message went out
                pipe.publish(self.channel, orjson.dumps({"from": self._me, "ops": batch}))
            for op in batch:
                if op[0] == "r":
                    _, provider, model, sent_at, ttl_s, _, hashes = op
                    if hashes:
                        pipe.evalsha(self._sha, len(hashes), *[self._key(h) for h in hashes],
                                     f"{provider}\t{model}", repr(sent_at), max(1, int(ttl_s + 1)))
                else:
                    field = f"{op[1]}\t{op[2]}"
                    for h in op[3]:
                        pipe.hdel(self._key(h), field)
            try:
                await pipe.execute()
                return
            except NoScriptError:  # Redis restarted (scripts are not persisted): load it again, once
                self._sha = None

    def _key(self, h: int) -> str:
        return f"{self._p}{h:016x}"

    # ---- in: the other replicas' changes ------------------------------------------------------------------
    async def start(self, ready_within_s: float = 2.0) -> None:
        """Listen to the other replicas; serve once subscribed and loaded (bounded: without Redis, at once with an
        empty index), so no prefix a peer sends after our start is missed."""
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="prefix-cache-sync")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.listening.wait(), ready_within_s)

    async def aclose(self) -> None:
        """Send what is queued (bounded), then stop listening."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_DEADLINE_S * 2):
                while self._flusher is not None:
                    await asyncio.shield(self._flusher)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None

    async def drain(self) -> None:
        """Wait until every queued change has been sent (tests)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _listen(self) -> None:
        failed = False
        while True:
            pubsub = self._r.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._load()  # after subscribing: nothing sent in between is missed
                self.listening.set()
                failed = False
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if msg is not None and msg.get("type") == "message":
                        self.apply(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self.listening.is_set() or not failed:  # once per outage
                    log.warning("prefix cache: not receiving other replicas' prefixes (%s); retrying every "
                                "second", type(e).__name__)
                failed = True
                self.listening.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def apply(self, data: bytes | str) -> None:
        """Another replica's changes (one published message); our own were applied when made."""
        try:
            msg = orjson.loads(data)
            if msg.get("from") == self._me:
                return
            for op in msg["ops"]:
                if op[0] == "r":
                    _, provider, model, sent_at, ttl_s, max_entries, hashes = op
                    LocalPrefixStore.remember_now(self, (provider, model), hashes, float(sent_at), ttl_s,
                                                  int(max_entries))
                elif op[0] == "f":
                    LocalPrefixStore.forget_now(self, (op[1], op[2]), op[3])
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("prefix cache: ignored a malformed message on %s", self.channel)

    async def _load(self) -> None:
        """What the other replicas sent before this one listened, from the Redis hashes (newest time kept)."""
        keys: list[Any] = []
        async for k in self._r.scan_iter(match=f"{self._p}*", count=_LOAD_BATCH):
            keys.append(k)
            if len(keys) >= _LOAD_BATCH:
                await self._load_keys(keys)
                keys = []
        if keys:
            await self._load_keys(keys)

    async def _load_keys(self, keys: list[Any]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        for k, reply in zip(keys, await pipe.execute()):
            name = k.decode() if isinstance(k, bytes) else k
            try:
                h = int(name[len(self._p):], 16)
            except ValueError:
                continue
            for f, v in (reply or {}).items():
                provider, _, model = (f.decode() if isinstance(f, bytes) else f).partition("\t")
                try:
                    sent_at = float(v)
                except ValueError:
                    continue
                key = (provider, model)
                known = self.sent_at(h, key)
                if known is None or known < sent_at:
                    LocalPrefixStore.remember_now(self, key, [h], sent_at, 0.0, self._max_entries(key))


PrefixStore = LocalPrefixStore  # the interface: SharedPrefixStore is one
