"""Budget counters in Redis, shared by every replica. Each operation is one Lua script, so it is atomic.

Key layout (P = `gateway.redis_prefix`; C = counter name such as `team:search:m2024-05` or `key:ab12cd34ef56:d2024-05-21`):
  P budget:C           HASH  spent (units, settled), reserved (units, outstanding), r:<request id> -> units held
  P budget:C:holds     ZSET  request id -> deadline (ms, Redis clock) after which an unsettled hold is released
  P budget:settled:<request id>   STRING, set once by settle (idempotency marker), expires after two days
Counters expire a day after their period ends. Units are 1e-9 of the reporting currency, kept as decimal integer
strings and only ever changed by the exact string arithmetic below (`_BIGINT`: add, subtract, compare), never as
Lua numbers: those are doubles, exact only below 2**53 units (~9 million currency units), and HINCRBY stops at
2**63. So a counter holds any budget finance sets, to the unit. (Strings written by HINCRBY before are the same
format.)

RESERVE  KEYS = [hash1, holds1, hash2, holds2, ...]   ARGV = [request id, units, hold ms, limit1, ttl1, limit2, ...]
  -> {"seed", i, ...} when a counter hash does not exist (nothing changed; caller seeds from the ledger, retries)
  -> releases expired holds, then {"ok"} if this request already holds a reservation (retry of the same id)
  -> {"deny", i} when spent + reserved + units > limit for counter i (nothing changed)
  -> otherwise reserves `units` on every counter, records the hold, refreshes TTLs: {"ok", total1, total2, ...}
     (each counter's spent + reserved afterwards: the last known state a replica falls back on without Redis)
  The request path runs the same reservation (`RESERVE_FUNCTIONS`) inside the admission script, after the rate
  limit check, in one round trip (gateway/limits/admission.py).
SEED     KEYS = [hash]   ARGV = [spent units, ttl]: creates the counter only if it does not exist.
SETTLE   KEYS = [marker, hash1, holds1, ...]   ARGV = [request id, actual units, marker ttl]
  -> {} if the marker exists (already settled); else sets it, and on each existing counter releases the hold
     (if still there) and adds the actual units to spent; returns {counter index, spent, ...}.
     A counter that vanished is left alone: the ledger re-seeds it when next needed.
  Finished requests' settlements are sent in batches, one pipeline per batch (gateway/limits/settler.py).
"""

from __future__ import annotations

from typing import Any

from gateway.limits.budgets import ReserveOutcome, Scope
from gateway.state.outbox import ScriptCall

# Non-negative integers as decimal strings. Numbers of at most 15 digits take the fast path (doubles are exact
# there); longer ones are added and subtracted in 7-digit limbs.
_BIGINT = """
local function norm(a)
  a = string.gsub(a, '^0+', '')
  if a == '' then return '0' end
  return a
end
local function cmp(a, b)
  a, b = norm(a), norm(b)
  if #a ~= #b then return (#a < #b) and -1 or 1 end
  if a == b then return 0 end
  return (a < b) and -1 or 1
end
local function limbs(a)
  local out, i = {}, #a
  while i > 0 do
    out[#out + 1] = tonumber(string.sub(a, math.max(1, i - 6), i))
    i = i - 7
  end
  return out
end
local function join(l)
  local n = #l
  while n > 1 and l[n] == 0 do n = n - 1 end
  local parts = {string.format('%d', l[n])}
  for k = n - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', l[k]) end
  return table.concat(parts)
end
local function add(a, b)
  a, b = norm(a), norm(b)
  if #a <= 15 and #b <= 15 then return string.format('%.0f', tonumber(a) + tonumber(b)) end
  local x, y, out, carry = limbs(a), limbs(b), {}, 0
  for k = 1, math.max(#x, #y) do
    local v = (x[k] or 0) + (y[k] or 0) + carry
    carry = (v >= 10000000) and 1 or 0
    out[k] = v - carry * 10000000
  end
  if carry > 0 then out[#out + 1] = carry end
  return join(out)
end
-- a - b, or '0' when b > a (a counter never goes below zero)
local function sub(a, b)
  a, b = norm(a), norm(b)
  if cmp(a, b) <= 0 then return '0' end
  if #a <= 15 then return string.format('%.0f', tonumber(a) - tonumber(b)) end
  local x, y, out, borrow = limbs(a), limbs(b), {}, 0
  for k = 1, #x do
    local v = x[k] - (y[k] or 0) - borrow
    borrow = (v < 0) and 1 or 0
    out[k] = v + borrow * 10000000
  end
  return join(out)
end
local function hadd(h, field, amount)
  local v = add(redis.call('HGET', h, field) or '0', amount)
  redis.call('HSET', h, field, v)
  return v
end
local function hsub(h, field, amount)
  redis.call('HSET', h, field, sub(redis.call('HGET', h, field) or '0', amount))
end
"""

# The reservation as a Lua function, shared by RESERVE and by the admission script (gateway/limits/admission.py:
# rate limits and reservation in one round trip). Counters at KEYS[ko+1 .. ko+2n], arguments at ARGV[ao+1 ..].
# Returns the reply and, when the request is admitted, the function that makes the reservation (nothing is
# reserved until it is called); a reply without it (seed, deny, already held) is final.
RESERVE_FUNCTIONS = """
local function reserve_plan(ko, n, ao)
  local missing = {}
  for i = 1, n do
    if redis.call('EXISTS', KEYS[ko+2*i-1]) == 0 then missing[#missing+1] = i - 1 end
  end
  if #missing > 0 then
    local out = {'seed'}
    for _, i in ipairs(missing) do out[#out+1] = i end
    return out
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local rid = ARGV[ao+1]
  local units = ARGV[ao+2]
  for i = 1, n do
    local h, z = KEYS[ko+2*i-1], KEYS[ko+2*i]
    local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 200)
    for _, old in ipairs(expired) do
      local held = redis.call('HGET', h, 'r:' .. old)
      if held then
        hsub(h, 'reserved', held)
        redis.call('HDEL', h, 'r:' .. old)
      end
      redis.call('ZREM', z, old)
    end
  end
  for i = 1, n do
    if redis.call('HEXISTS', KEYS[ko+2*i-1], 'r:' .. rid) == 1 then return {'ok'} end
  end
  for i = 1, n do
    local h = KEYS[ko+2*i-1]
    local spent = redis.call('HGET', h, 'spent') or '0'
    local reserved = redis.call('HGET', h, 'reserved') or '0'
    if cmp(add(add(spent, reserved), units), ARGV[ao+2*i+2]) > 0 then return {'deny', i - 1} end
  end
  return nil, function()
    local out = {'ok'}
    for i = 1, n do
      local h, z = KEYS[ko+2*i-1], KEYS[ko+2*i]
      local ttl = tonumber(ARGV[ao+2*i+3])
      local reserved = hadd(h, 'reserved', units)
      redis.call('HSET', h, 'r:' .. rid, units)
      redis.call('ZADD', z, now + tonumber(ARGV[ao+3]), rid)
      redis.call('EXPIRE', h, ttl)
      redis.call('EXPIRE', z, ttl)
      out[#out+1] = add(redis.call('HGET', h, 'spent') or '0', reserved)
    end
    return out
  end
end
"""

_RESERVE = _BIGINT + RESERVE_FUNCTIONS + """
local refused, reserve = reserve_plan(0, #KEYS / 2, 0)
if not reserve then return refused end
return reserve()
"""

# Puts a hold (a reservation made while Redis was unreachable, gateway/limits/degrade.py) on each existing counter
# without an admission check (the request is already running); once per request id.
_HOLD = _BIGINT + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2*i-1], KEYS[2*i]
  if redis.call('EXISTS', h) == 1 and redis.call('HEXISTS', h, 'r:' .. ARGV[1]) == 0 then
    hadd(h, 'reserved', ARGV[2])
    redis.call('HSET', h, 'r:' .. ARGV[1], ARGV[2])
    redis.call('ZADD', z, now + tonumber(ARGV[3]), ARGV[1])
  end
end
return 1
"""

_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

_SETTLE = _BIGINT + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3])) then return {} end
local rid = ARGV[1]
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local h, z = KEYS[2*i], KEYS[2*i+1]
  if redis.call('EXISTS', h) == 1 then
    local held = redis.call('HGET', h, 'r:' .. rid)
    if held then
      hsub(h, 'reserved', held)
      redis.call('HDEL', h, 'r:' .. rid)
      redis.call('ZREM', z, rid)
    end
    out[#out+1] = i - 1
    out[#out+1] = hadd(h, 'spent', ARGV[2])
  end
end
return out
"""

_SETTLED_TTL_S = 2 * 86_400


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def reserve_outcome(result: Any) -> ReserveOutcome:
    """`reserve_plan`'s reply (RESERVE's, or the admission script's when it admitted or refused on the budget)."""
    status = _s(result[0])
    if status == "seed":
        return ReserveOutcome("seed", missing=tuple(int(i) for i in result[1:]))
    if status == "deny":
        return ReserveOutcome("deny", scope_index=int(result[1]))
    return ReserveOutcome("ok", totals=tuple(int(_s(t)) for t in result[1:]))


class RedisCounters:
    def __init__(self, redis: Any, prefix: str = "gw:") -> None:
        self.redis = self._redis = redis
        self._prefix = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._seed = redis.register_script(_SEED)
        self._settle = redis.register_script(_SETTLE)
        self._hold = redis.register_script(_HOLD)

    def _hash(self, counter: str) -> str:
        return f"{self._prefix}budget:{counter}"

    hash_key = _hash

    def _keys(self, counters: list[str] | tuple[str, ...]) -> list[str]:
        keys: list[str] = []
        for c in counters:
            keys += [self._hash(c), self._hash(c) + ":holds"]
        return keys

    def reserve_keys_args(self, request_id: str, units: int, scopes: list[Scope],
                          hold_s: float) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of `reserve_plan` (RESERVE_FUNCTIONS) for these scopes."""
        args: list[Any] = [request_id, units, int(hold_s * 1000)]
        for s in scopes:
            args += [s.limit, s.ttl_s]
        return self._keys([s.counter for s in scopes]), args

    async def reserve(self, request_id: str, units: int, scopes: list[Scope], hold_s: float) -> ReserveOutcome:
        keys, args = self.reserve_keys_args(request_id, units, scopes, hold_s)
        return reserve_outcome(await self._reserve(keys=keys, args=args))

    async def hold(self, request_id: str, counters: tuple[str, ...], units: int, hold_s: float) -> None:
        await self._hold(keys=self._keys(counters), args=[request_id, units, int(hold_s * 1000)])

    async def seed(self, counter: str, units: int, ttl_s: int) -> None:
        await self._seed(keys=[self._hash(counter)], args=[units, ttl_s])

    def settle_call(self, request_id: str, counters: tuple[str, ...], actual_units: int) -> ScriptCall:
        """SETTLE as a script call, for a pipeline (the settlements of finished requests go in batches:
        gateway/limits/settler.py); its reply goes to `settled`."""
        return ScriptCall(self._settle, (f"{self._prefix}budget:settled:{request_id}", *self._keys(counters)),
                          (request_id, actual_units, _SETTLED_TTL_S))

    @staticmethod
    def settled(counters: tuple[str, ...], result: Any) -> dict[str, int]:
        """Each existing counter's spent after a settlement, from SETTLE's reply (exact: decimal text)."""
        return {counters[int(result[i])]: int(result[i + 1]) for i in range(0, len(result), 2)}

    async def settle(self, request_id: str, counters: tuple[str, ...], actual_units: int) -> dict[str, int]:
        call = self.settle_call(request_id, counters, actual_units)
        return self.settled(counters, await call.script(keys=call.keys, args=call.args))

    async def spent(self, counter: str) -> int | None:
        value = await self._redis.hget(self._hash(counter), "spent")
        return None if value is None else int(value)
