"""Per-key rate limits: requests per minute and tokens per minute, as token buckets.

Both buckets are checked together and charged only if both admit the request, so a refused request costs
nothing. `MemoryRateLimiter` keeps buckets in process; `RedisRateLimiter` shares them across replicas with one
Lua script using Redis's clock (replica clocks may disagree). The arithmetic is `gateway.decisions.limits.bucket_take`.

Redis key layout (P = `gateway.redis_prefix`): P rl:<key id>:rpm and P rl:<key id>:tpm, HASH {t: tokens left,
ts: seconds}, expiring 2 minutes after last use (a full bucket is the same as no bucket).

`estimated_tokens` is what the pipeline expects the request to use (prompt + expected output); `adjust` charges
the difference once the actual usage is known, so tpm tracks real tokens (a bucket may go negative: the next
request waits for it to refill).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from gateway.decisions import limits as d
from gateway.errors import RateLimited
from gateway.keys.identity import Identity

_TTL_S = 120

_CHECK = """
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function level(key, cap)
  local v = redis.call('HMGET', key, 't', 'ts')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60)
end
local wait = 0
local r, t
if rpm > 0 then
  r = level(KEYS[1], rpm)
  if r < 1 then wait = math.max(wait, (1 - r) * 60 / rpm) end
end
if tpm > 0 then
  cost = math.min(cost, tpm)
  t = level(KEYS[2], tpm)
  if t < cost then wait = math.max(wait, (cost - t) * 60 / tpm) end
end
if wait > 0 then return tostring(wait) end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 't', tostring(r - 1), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[1], %(ttl)d)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 't', tostring(t - cost), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[2], %(ttl)d)
end
return '0'
""" % {"ttl": _TTL_S}

_ADJUST = """
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local level = cap
if v[1] then level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60) end
redis.call('HSET', KEYS[1], 't', tostring(math.min(cap, level - delta)), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], %(ttl)d)
return 1
""" % {"ttl": _TTL_S}


def applies(identity: Identity) -> bool:
    """Whether the caller has a limit to check (a gateway key with rpm or tpm): `check` returns at once if not."""
    return identity.key_id is not None and bool(getattr(identity, "rpm", None) or getattr(identity, "tpm", None))


class RateLimiter(Protocol):
    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        """Charge one request and its estimated tokens, or raise RateLimited(retry_after) charging nothing."""

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the tpm bucket once the request's real token count is known."""


def _refuse(identity: Identity, wait_s: float) -> RateLimited:
    return RateLimited("rate limit exceeded for this key (requests or tokens per minute); retry later",
                       retry_after=d.retry_after_header(wait_s))


class MemoryRateLimiter:
    applies = staticmethod(applies)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], d.Bucket] = {}

    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        if identity.key_id is None or (not identity.rpm and not identity.tpm):
            return
        now = self._clock()
        decisions = []
        for kind, limit, cost in (("rpm", identity.rpm, 1), ("tpm", identity.tpm, estimated_tokens)):
            if limit:
                slot = (identity.key_id, kind)
                decisions.append((slot, d.bucket_take(self._buckets.get(slot), now, limit, float(cost))))
        wait = max(dec.retry_after_s for _, dec in decisions)
        if wait > 0:
            raise _refuse(identity, wait)
        for slot, dec in decisions:
            self._buckets[slot] = dec.bucket

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        if identity.key_id is None or not identity.tpm or actual_tokens == estimated_tokens:
            return
        slot = (identity.key_id, "tpm")
        now = self._clock()
        refilled = d.bucket_take(self._buckets.get(slot), now, identity.tpm, 0.0).bucket
        tokens = min(float(identity.tpm), refilled.tokens - (actual_tokens - estimated_tokens))
        self._buckets[slot] = d.Bucket(tokens, now)


class RedisRateLimiter:
    applies = staticmethod(applies)

    def __init__(self, redis: Any, prefix: str = "gw:") -> None:
        self._prefix = prefix
        self._check = redis.register_script(_CHECK)
        self._adjust = redis.register_script(_ADJUST)

    def _key(self, key_id: str, kind: str) -> str:
        return f"{self._prefix}rl:{key_id}:{kind}"

    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        if identity.key_id is None or (not identity.rpm and not identity.tpm):
            return
        wait = await self._check(keys=[self._key(identity.key_id, "rpm"), self._key(identity.key_id, "tpm")],
                                 args=[identity.rpm or 0, identity.tpm or 0, max(0, estimated_tokens)])
        wait_s = float(wait.decode() if isinstance(wait, bytes) else wait)
        if wait_s > 0:
            raise _refuse(identity, wait_s)

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        if identity.key_id is None or not identity.tpm or actual_tokens == estimated_tokens:
            return
        await self._adjust(keys=[self._key(identity.key_id, "tpm")],
                           args=[identity.tpm, actual_tokens - estimated_tokens])
