"""Budgets and rate limits that keep holding while Redis is unreachable (`on_shared_state_unavailable: degrade`):
while Redis answers they are the shared ones; when `SharedState` (gateway/limits/shared_state.py) says it does not,
each replica spends its conservative local share.

The conservative local share (why replicas together never overspend):
- budgets: every successful reservation returns each counter's spent + reserved (`RedisCounters.reserve`), kept
  as the counter's last known total (and refreshed in the background for counters in use). A degraded replica
  may spend at most `(limit - last known total) // replicas alive` per counter, reserving the worst case and
  settling the actual cost locally, exactly as the Redis script does. Replicas that all do so spend, together,
  at most what was left. A counter this replica never saw is seeded from the ledger's billed spend (the
  database is not Redis) and shared the same way.
- rate limits: each key's rpm and tpm are divided by the replicas alive (at least 1 each), in token buckets that
  start *empty* (the shared bucket may have been spent already) and refill at the divided rate, so together they
  never exceed the key's rate.
- reconciliation, once Redis answers again: each request settled while degraded is settled in Redis with the same
  idempotent script (`budget:settled:<request id>` marker: added exactly once, however often retried); each
  request still running holds its reservation in Redis (`hold`), so the shared counters account for it until it
  settles normally. A replica leaves its local share only once every replica it saw alive before the outage has
  reconciled too (its presence was refreshed since, which it does only after reconciling) or is gone (not seen
  for `alive_s`): a peer still spending its share unreconciled would be invisible to the shared counters. A counter that vanished from Redis (it restarted empty) is skipped: it is re-seeded from the
  ledger, which already holds those requests' rows.

The last known total of a counter is as old as this replica's last reservation on it or the last background
refresh (`probe_s`), so spending by other replicas in that moment before the outage is not in it: the share keeps
back the counter's recent growth rate times that age (plus one probe interval) before dividing. Known limit: a
burst faster than the recent rate in that moment can still exceed the budget by what the burst spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from gateway.decisions import limits as d
from gateway.keys.identity import Identity
from gateway.limits.budgets import ReserveOutcome, Scope
from gateway.limits.ratelimit import LocalBuckets, RateLimiter, refusal, applies, nothing
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.shared_state import Degraded, SharedState, no_reconcile

# ------------------------------------------------------------------------------------------------ budgets
@dataclass
class _Share:
    """One counter's local allowance while degraded, in units."""

    share: int
    used: int = 0  # reserved + settled locally
    holds: dict[str, int] = field(default_factory=dict)  # request id -> units reserved locally


@dataclass(frozen=True)
class _Settled:
    request_id: str
    counters: tuple[str, ...]
    units: int


class DegradingCounters:
    """`RedisCounters` while Redis answers; the local share of each counter while it does not."""

    _RATE_WINDOW_S = 0.2

    def __init__(self, inner: RedisCounters, state: SharedState, *, hold_s: float = 3600.0) -> None:
        self._inner = inner
        self._state = state
        self._hold_s = hold_s
        self._last_total: dict[str, int] = {}  # counter -> spent + reserved, as last seen
        self._last_at: dict[str, float] = {}  # counter -> monotonic time of the last reading
        self._seen: dict[str, tuple[int, float]] = {}  # counter -> the reading the growth rate is measured from
        self._rate: dict[str, float] = {}  # counter -> recent growth, units per second (smoothed)
        self._clock = time.monotonic
        self._shares: dict[str, _Share] = {}
        self._local: dict[str, tuple[tuple[str, ...], int]] = {}  # request id -> (counters, units) held locally
        self._settled: list[_Settled] = []
        state.on_restore(self.reconcile, self.resume)
        state.on_tick(self.refresh)

    async def reserve(self, request_id: str, units: int, scopes: list[Scope], hold_s: float) -> ReserveOutcome:
        try:
            outcome = await self._state.call(lambda: self._inner.reserve(request_id, units, scopes, hold_s))
        except Degraded:
            return self.reserve_locally(request_id, units, scopes)
        self.observe(scopes, outcome)
        return outcome

    def observe(self, scopes: list[Scope], outcome: ReserveOutcome) -> None:
        """A reservation Redis made: each counter's total is its last known state."""
        for s, total in zip(scopes, outcome.totals):
            self._observe(s.counter, total)

    async def seed(self, counter: str, units: int, ttl_s: int) -> None:
        try:
            await self._state.call(lambda: self._inner.seed(counter, units, ttl_s))
        except Degraded:
            self._last_total.setdefault(counter, units)  # the ledger's billed spend: all we know

    async def settle(self, request_id: str, counters: tuple[str, ...], actual_units: int) -> dict[str, int]:
        local = self.pop_local(request_id)
        try:
            return await self._state.call(lambda: self._inner.settle(request_id, counters, actual_units))
        except Degraded:
            return self.settle_locally(request_id, counters, actual_units, local)

    def pop_local(self, request_id: str) -> tuple[tuple[str, ...], int] | None:
        """A finished request's local reservation (made while degraded and not yet held in Redis by `reconcile`):
        if it settles in Redis, the settle script simply adds the actual cost (there is no hold to release), once,
        by its request-id marker; if it settles here, the local share gets its hold back."""
        return self._local.pop(request_id, None)

    async def spent(self, counter: str) -> int | None:
        try:
            return await self._state.call(lambda: self._inner.spent(counter))
        except Degraded:
            total = self._last_total.get(counter)
            share = self._shares.get(counter)
            return None if total is None else total + (share.used if share else 0)

    # -------------------------------------------------------------------------------------- local share
    def _share(self, s: Scope) -> _Share | None:
        share = self._shares.get(s.counter)
        if share is None:
            total = self._last_total.get(s.counter)
            if total is None:
                return None
            # What peers may have spent since our last reading is not in it: keep back the counter's recent
            # growth over that time (plus a probe interval) before dividing.
            at = self._last_at.get(s.counter)
            age = self._clock() - at if at is not None else 0.0
            margin = int(self._rate.get(s.counter, 0.0) * (age + self._state.probe_s))
            share = _Share(max(0, s.limit - total - margin) // self._state.replicas_alive)
            self._shares[s.counter] = share
        return share

    def _observe(self, counter: str, total: int) -> None:
        """A fresh reading; the growth rate is measured over at least `_RATE_WINDOW_S` (a burst of readings a
        millisecond apart says nothing about a rate per second)."""
        now = self._clock()
        self._last_total[counter] = total
        self._last_at[counter] = now
        ref = self._seen.get(counter)
        if ref is None:
            self._seen[counter] = (total, now)
        elif now - ref[1] >= self._RATE_WINDOW_S:
            rate = max(0.0, (total - ref[0]) / (now - ref[1]))
            old = self._rate.get(counter)
            self._rate[counter] = rate if old is None else max(rate, old * 0.7 + rate * 0.3)
            self._seen[counter] = (total, now)

    def reserve_locally(self, request_id: str, units: int, scopes: list[Scope],
                        on_admit: Callable[[], None] | None = None) -> ReserveOutcome:
        """The reservation on the local shares; `on_admit` is called when (and only when) it is made."""
        shares = [self._share(s) for s in scopes]
        missing = tuple(i for i, sh in enumerate(shares) if sh is None)
        if missing:
            return ReserveOutcome("seed", missing=missing)
        found = [sh for sh in shares if sh is not None]
        if request_id in self._local:
            return ReserveOutcome("ok")
        for i, sh in enumerate(found):
            if not d.admits(d.CounterState(sh.used, 0), sh.share, units):
                return ReserveOutcome("deny", scope_index=i)
        if on_admit is not None:
            on_admit()
        for sh in found:
            sh.used += units
            sh.holds[request_id] = units
        self._local[request_id] = (tuple(s.counter for s in scopes), units)
        return ReserveOutcome("ok")

    def settle_locally(self, request_id: str, counters: tuple[str, ...], actual_units: int,
                       local: tuple[tuple[str, ...], int] | None) -> dict[str, int]:
        """The settlement while Redis is unreachable: on the local share now, in Redis at reconciliation."""
        if any(s.request_id == request_id for s in self._settled[-64:]):
            return {}
        out = {}
        for counter in counters:
            sh = self._shares.get(counter)
            if sh is not None and local is not None:
                sh.used += actual_units - sh.holds.pop(request_id, 0)
            total = self._last_total.get(counter)
            if total is not None:
                out[counter] = total + (sh.used if sh is not None else 0)
        # A request reserved in Redis before the outage: its reservation is in the last known total already,
        # so it costs the local share nothing; its actual cost reaches Redis at reconciliation.
        self._settled.append(_Settled(request_id, counters, actual_units))
        return out

    async def reconcile(self) -> None:
        """Redis answers again: settle there what was settled here, hold there what still runs (idempotent)."""
        while self._settled:
            s = self._settled[0]
            await self._inner.settle(s.request_id, s.counters, s.units)
            self._settled.pop(0)
        for request_id, (counters, units) in list(self._local.items()):
            await self._inner.hold(request_id, counters, units, self._hold_s)
            self._local.pop(request_id, None)

    async def resume(self) -> None:
        """Back on the shared counters: the next outage computes fresh shares."""
        self._shares.clear()

    async def refresh(self) -> None:
        """Keep the last known totals of counters in use fresh (one pipelined read), for the next outage."""
        counters = list(self._last_total)[-256:]
        if not counters:
            return
        pipe = self._inner.redis.pipeline(transaction=False)
        for c in counters:
            pipe.hmget(self._inner.hash_key(c), "spent", "reserved")
        for c, (spent, reserved) in zip(counters, await pipe.execute()):
            if spent is None and reserved is None:
                self._last_total.pop(c, None)
            else:
                self._observe(c, int(spent or 0) + int(reserved or 0))


# ------------------------------------------------------------------------------------------- rate limits
class DegradingRateLimiter:
    """The shared rate limiter while Redis answers; per-replica buckets at 1/n of each rate while it does not."""

    applies = staticmethod(applies)

    def __init__(self, inner: RateLimiter, state: SharedState, clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._state = state
        self._buckets = LocalBuckets(clock, start_empty=True)
        state.on_restore(no_reconcile, self._forget)

    async def _forget(self) -> None:
        self._buckets.clear()

    def _local_limits(self, identity: Identity) -> tuple[int | None, int | None]:
        n = self._state.replicas_alive
        return (None if not identity.rpm else max(1, identity.rpm // n),
                None if not identity.tpm else max(1, identity.tpm // n))

    async def check(self, identity: Identity, estimated_tokens: int) -> None:
        try:
            return await self._state.call(lambda: self._inner.check(identity, estimated_tokens))
        except Degraded:
            self.take_locally(identity, estimated_tokens)()

    def take_locally(self, identity: Identity, estimated_tokens: int) -> Callable[[], None]:
        """Raise RateLimited charging nothing, or return the function that charges the local buckets."""
        if identity.key_id is None:
            return nothing
        rpm, tpm = self._local_limits(identity)
        wait, charge = self._buckets.take(identity.key_id, rpm, tpm, float(estimated_tokens))
        if wait > 0:
            raise refusal(identity, wait)
        return charge

    async def adjust(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        try:
            return await self._state.call(lambda: self._inner.adjust(identity, estimated_tokens, actual_tokens))
        except Degraded:
            self.adjust_locally(identity, estimated_tokens, actual_tokens)

    def adjust_locally(self, identity: Identity, estimated_tokens: int, actual_tokens: int) -> None:
        _, tpm = self._local_limits(identity)
        if identity.key_id is None or not tpm or actual_tokens == estimated_tokens:
            return
        self._buckets.adjust(identity.key_id, tpm, actual_tokens - estimated_tokens)
