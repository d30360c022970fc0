"""Per-key rate limits: requests per minute and tokens per minute, as token buckets.

Both buckets are checked together and charged only if both admit the request, so a refused request costs
nothing; the request path checks them in the admission (gateway/limits/admission.py), together with the budget
reservation, and corrects tpm in the settlement (gateway/limits/settler.py). `MemoryRateLimiter` keeps buckets in
process; `RedisRateLimiter` shares them across replicas with one
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
from gateway.state.outbox import ScriptCall

_TTL_S = 120

# The buckets' arithmetic as Lua functions, shared by the scripts here and by the admission script
# (gateway/limits/admission.py: rate limits and budget reservation in one round trip).
RL_FUNCTIONS = """
local function rl_now()
  local tm = redis.call('TIME')
  return tonumber(tm[1]) + tonumber(tm[2]) / 1000000
end
local function rl_level(key, cap, now)
  local v = redis.call('HMGET', key, 't', 'ts')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / 60)
end
local function rl_set(key, tokens, now)
  redis.call('HSET', key, 't', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', key, %(ttl)d)
end
-- One request and `cost` tokens against the rpm and tpm buckets (a limit of 0: none). Returns the seconds to wait
-- (0: admitted) and the function that charges both buckets, changing nothing until it is called.
local function rl_take(krpm, ktpm, rpm, tpm, cost)
  local now = rl_now()
  local wait, r, t = 0, 0, 0
  if rpm > 0 then
    r = rl_level(krpm, rpm, now)
    if r < 1 then wait = math.max(wait, (1 - r) * 60 / rpm) end
  end
  if tpm > 0 then
    cost = math.min(cost, tpm)
    t = rl_level(ktpm, tpm, now)
    if t < cost then wait = math.max(wait, (cost - t) * 60 / tpm) end
  end
  return wait, function()
    if rpm > 0 then rl_set(krpm, r - 1, now) end
    if tpm > 0 then rl_set(ktpm, t - cost, now) end
  end
end
""" % {"ttl": _TTL_S}

_CHECK = RL_FUNCTIONS + """
local wait, charge = rl_take(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then return tostring(wait) end
charge()
return '0'
"""

_ADJUST = RL_FUNCTIONS + """
local now = rl_now()
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
rl_set(KEYS[1], math.min(cap, rl_level(KEYS[1], cap, now) - delta), now)
return 1
"""


def applies(identity: Identity) -> bool:
    """Whether the caller has a limit to check (a gateway key with rpm or tpm): `check` returns at once if not."""
    return identity.key_id is not None and bool(getattr(identity, "rpm", None) or getattr(identity, "tpm", None))


class RateLimiter(Protocol):
    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        """Charge one request and its estimated tokens, or raise RateLimited(retry_after) charging nothing."""

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the tpm bucket once the request's real token count is known."""


def refusal(identity: Identity, wait_s: float) -> RateLimited:
    return RateLimited("rate limit exceeded for this key (requests or tokens per minute); retry later",
                       retry_after=d.retry_after_header(wait_s))


def nothing() -> None:
    """The charge of an admission nothing applies to."""


class LocalBuckets:
    """Token buckets in this process: the in-process limiter's, and a degraded replica's local share (whose buckets
    start empty: the shared ones may have been drained just before Redis went away)."""

    def __init__(self, clock: Callable[[], float], *, start_empty: bool = False) -> None:
        self._clock = clock
        self._start_empty = start_empty
        self._buckets: dict[tuple[str, str], d.Bucket] = {}

    def _get(self, slot: tuple[str, str], now: float) -> d.Bucket | None:
        bucket = self._buckets.get(slot)
        if bucket is None and self._start_empty:
            return d.Bucket(0.0, now)
        return bucket

    def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: float) -> tuple[float, Callable[[], None]]:
        """The seconds to wait (0: admitted) and the function that charges one request and `tokens` to both
        buckets (nothing is charged until it is called; a refusal only records the refill so far)."""
        now = self._clock()
        decisions = []
        for kind, limit, cost in (("rpm", rpm, 1.0), ("tpm", tpm, tokens)):
            if limit:
                slot = (key_id, kind)
                bucket = self._get(slot, now)
                decisions.append((slot, limit, bucket, d.bucket_take(bucket, now, limit, cost)))
        wait = max((dec.retry_after_s for *_, dec in decisions), default=0.0)
        if wait > 0:
            for slot, limit, bucket, _ in decisions:  # the refill so far, nothing taken (an empty start refills)
                self._buckets[slot] = d.bucket_take(bucket, now, limit, 0.0).bucket
            return wait, nothing

        def charge() -> None:
            for slot, _, _, dec in decisions:
                self._buckets[slot] = dec.bucket

        return 0.0, charge

    def adjust(self, key_id: str, tpm: int, delta: int) -> None:
        """Charge `delta` more tokens (a refund when negative) to the tpm bucket; it may go below zero."""
        slot, now = (key_id, "tpm"), self._clock()
        refilled = d.bucket_take(self._get(slot, now), now, tpm, 0.0).bucket
        self._buckets[slot] = d.Bucket(min(float(tpm), refilled.tokens - delta), now)

    def clear(self) -> None:
        self._buckets.clear()


class MemoryRateLimiter:
    applies = staticmethod(applies)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets = LocalBuckets(clock)

    def take(self, identity: Identity, estimated_tokens: int) -> Callable[[], None]:
        """Raise RateLimited charging nothing, or return the function that charges the request (the admission
        calls it only once the budget reservation has succeeded as well)."""
        if identity.key_id is None or (not identity.rpm and not identity.tpm):
            return nothing
        wait, charge = self._buckets.take(identity.key_id, identity.rpm, identity.tpm, float(estimated_tokens))
        if wait > 0:
            raise refusal(identity, wait)
        return charge

    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        self.take(identity, estimated_tokens)()

    def adjust_now(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        if identity.key_id is None or not identity.tpm or actual_tokens == estimated_tokens:
            return
        self._buckets.adjust(identity.key_id, identity.tpm, actual_tokens - estimated_tokens)

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        self.adjust_now(identity, estimated_tokens, actual_tokens)


class RedisRateLimiter:
    applies = staticmethod(applies)

    def __init__(self, redis: Any, prefix: str = "gw:") -> None:
        self._prefix = prefix
        self._check = redis.register_script(_CHECK)
        self._adjust = redis.register_script(_ADJUST)

    def key(self, key_id: str, kind: str) -> str:
        return f"{self._prefix}rl:{key_id}:{kind}"

    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        if identity.key_id is None or (not identity.rpm and not identity.tpm):
            return
        wait = await self._check(keys=[self.key(identity.key_id, "rpm"), self.key(identity.key_id, "tpm")],
                                 args=[identity.rpm or 0, identity.tpm or 0, max(0, estimated_tokens)])
        wait_s = float(wait.decode() if isinstance(wait, bytes) else wait)
        if wait_s > 0:
            raise refusal(identity, wait_s)

    def adjust_call(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> ScriptCall | None:
        """The script call that corrects the tpm bucket (None: nothing to correct), for a caller's pipeline."""
        if identity.key_id is None or not identity.tpm or actual_tokens == estimated_tokens:
            return None
        return ScriptCall(self._adjust, (self.key(identity.key_id, "tpm"),),
                          (identity.tpm, actual_tokens - estimated_tokens))

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        call = self.adjust_call(identity, estimated_tokens, actual_tokens)
        if call is not None:
            await call.script(keys=call.keys, args=call.args)
