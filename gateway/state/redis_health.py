"""Provider health shared through Redis: a vendor that fails on one replica is avoided by all.

The router calls `cooling()` on every request, so it reads a local mirror and never awaits. The mirror is
refreshed by a background task that listens on a pub/sub channel (a cool-down starts: every replica refreshes at
once) and polls every `poll_s` anyway (a missed message costs at most that long).

Key layout (P = `gateway.redis_prefix`):
  P health:fails    HASH provider -> consecutive failures (any replica); reset by a success or a cool-down
  P health:cool     HASH provider -> cool-down deadline, ms on Redis's clock
  P health:events   channel: "fail:<provider>", "cool:<provider>"
Deadlines are turned into *remaining* time by Redis (its own clock), and the mirror adds that to the local
monotonic clock, so replicas whose wall clocks disagree still agree on when a cool-down ends.
Recent latency stays per replica: it only breaks ties, and each replica's own view is fine for that.
While Redis is unreachable, each replica keeps the last known cool-downs and counts failures on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable

from gateway.domain import DeploymentKey
from gateway.state.base import CooldownPolicy, HealthView
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_FAIL = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[4] == '1' or n >= tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[2], ARGV[1], tostring(now + tonumber(ARGV[3])))
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', KEYS[3], 'cool:' .. ARGV[1])
  return tonumber(ARGV[3])
end
redis.call('PUBLISH', KEYS[3], 'fail:' .. ARGV[1])
return 0
"""

_SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local left = tonumber(all[i+1]) - now
  if left > 0 then
    out[#out+1] = all[i]
    out[#out+1] = tostring(left)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""

_DEFAULT_POLICY = CooldownPolicy(3, 30.0)


def is_redis_outage(error: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHealth(HealthView):
    def __init__(self, redis: Any, policies: dict[str, CooldownPolicy], *, prefix: str = "gw:",
                 poll_s: float = 0.5, clock: Callable[[], float] = time.monotonic, deadline_s: float = 0.5) -> None:
        super().__init__(clock)
        self._redis = redis
        self._policies = policies
        self._poll_s = poll_s
        self._fails_key = f"{prefix}health:fails"
        self._cool_key = f"{prefix}health:cool"
        self._channel = f"{prefix}health:events"
        self._fail = redis.register_script(_FAIL)
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._maybe_failing: set[str] = set()  # providers whose failure count may be non-zero in Redis
        self._deadline_s = deadline_s
        self._local_fails: dict[str, int] = {}  # failures counted while Redis was unreachable
        self._local_until: dict[str, float] = {}  # cool-downs started while Redis was unreachable
        self._task: asyncio.Task[None] | None = None

    # --- the Health protocol -------------------------------------------------------------------------------------

    async def record_success(self, key: DeploymentKey, latency_s: float) -> None:
        self._observe_latency(key, latency_s)
        # Only touch Redis when a failure count may exist: successes are the hot path.
        if key[0] in self._maybe_failing:
            self._maybe_failing.discard(key[0])
            self._local_fails.pop(key[0], None)
            try:
                async with asyncio.timeout(self._deadline_s):
                    await self._redis.hdel(self._fails_key, key[0])
            except Exception as e:
                if not is_redis_outage(e):
                    raise

    async def record_failure(self, provider: str, *, rate_limited: bool) -> None:
        policy = self._policies.get(provider, _DEFAULT_POLICY)
        cooldown_ms = int(policy.cooldown_s * 1000)
        try:
            async with asyncio.timeout(self._deadline_s):
                result = await self._fail(keys=[self._fails_key, self._cool_key, self._channel],
                                          args=[provider, policy.after_failures, cooldown_ms,
                                                "1" if rate_limited else "0"])
        except Exception as e:
            if not is_redis_outage(e):
                raise
            self._record_failure_locally(provider, policy, rate_limited)
            return
        if int(result) > 0:
            self._until[provider] = self._clock() + int(result) / 1000
            self._maybe_failing.discard(provider)
        else:
            self._maybe_failing.add(provider)

    def _record_failure_locally(self, provider: str, policy: CooldownPolicy, rate_limited: bool) -> None:
        """Redis unreachable: this replica counts failures and cools providers down on its own (the last known
        shared state stays in the mirror), and keeps those cool-downs when Redis's view returns."""
        count = self._local_fails.get(provider, 0) + 1
        self._local_fails[provider] = count
        self._maybe_failing.add(provider)
        if rate_limited or count >= policy.after_failures:
            self._local_fails[provider] = 0
            until = self._clock() + policy.cooldown_s
            self._until[provider] = self._local_until[provider] = until

    # --- the mirror ----------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Replace the mirror with Redis's view of current cool-downs (plus any this replica started alone)."""
        result = await self._snapshot(keys=[self._cool_key])
        now = self._clock()
        until = {_s(result[i]): now + int(_s(result[i + 1])) / 1000 for i in range(0, len(result), 2)}
        for provider, t in list(self._local_until.items()):
            if t <= now:
                del self._local_until[provider]
            else:
                until[provider] = max(t, until.get(provider, 0.0))
        self._until = until

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="health-mirror")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self.refresh()
                next_poll = self._clock() + self._poll_s
                while True:
                    timeout = max(0.0, next_poll - self._clock())
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                    due = self._clock() >= next_poll
                    if msg is not None and msg.get("type") == "message":
                        event, _, provider = _s(msg["data"]).partition(":")
                        if event == "fail":
                            self._maybe_failing.add(provider)
                        else:
                            due = True
                    if due:
                        await self.refresh()
                        next_poll = self._clock() + self._poll_s
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep the last known view; reconnect shortly
                log.warning("provider health refresh failed: %s", type(e).__name__)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
