"""Settling a finished request, off its response path: the budget reservation replaced by the actual cost, and the
tpm bucket corrected to the tokens actually used (contract 4).

`RequestBooks.close` hands the settlement over and does not wait for it:
- `MemorySettler` (no Redis) settles at once, in the same step: nothing to wait for.
- `RedisSettler` queues it in the Redis outbox (gateway/state/outbox.py): the settlements of requests finishing
  together go as one pipeline, one round trip, sent within one loop iteration. A reservation holds its worst case
  until its settlement lands, so a budget is never overspent meanwhile; a replica that dies with settlements in
  its outbox leaves holds that expire after `hold_s`, as a replica that died mid-request always did.

Never lost: SETTLE is idempotent by request id (its marker), so a settlement whose batch failed can be settled
again. In degrade mode (`on_shared_state_unavailable: degrade`) a settlement that cannot reach Redis is settled on
the local share and reconciled into Redis when it returns (gateway/limits/degrade.py), exactly as one made while
Redis was known to be down. Otherwise (refuse mode, or a failure that is not an outage) it is retried until Redis takes it. `drain` (at shutdown, and for
whoever reads Redis right after a response) sends what is queued and waits for it. A tpm correction is not
idempotent, so a failed one is not retried (the bucket refills on its own within the minute) but, in degrade mode,
applied to the local bucket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, Sequence

from gateway.decisions.limits import cost_units
from gateway.keys.identity import Identity
from gateway.limits.budgets import Budgets, MemoryCounters, Reservation
from gateway.limits.degrade import DegradingCounters, DegradingRateLimiter
from gateway.limits.ratelimit import MemoryRateLimiter, RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.shared_state import Degraded
from gateway.state.outbox import Command, RedisOutbox, ScriptCall

log = logging.getLogger(__name__)

_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # refuse mode: a settlement waits this long before each new try (then the last)


class Settler(Protocol):
    def settle(self, identity: Identity, reservation: Reservation | None, actual_cost: Decimal,
               tpm_estimate: int | None, actual_tokens: int) -> None:
        """Settle a finished request (a reservation without counters, or no tpm estimate: nothing to do there)."""

    async def drain(self) -> None:
        """Return once every settlement handed over so far has landed (or gone to its fallback)."""


class MemorySettler:
    def __init__(self, budgets: Budgets, counters: MemoryCounters, limiter: MemoryRateLimiter) -> None:
        self._budgets = budgets
        self._counters = counters
        self._limiter = limiter

    def settle(self, identity: Identity, reservation: Reservation | None, actual_cost: Decimal,
               tpm_estimate: int | None, actual_tokens: int) -> None:
        if reservation is not None and reservation.counters:
            spent = self._counters.settle_now(reservation.request_id, reservation.counters, cost_units(actual_cost))
            self._budgets.publish_spent(reservation.team, spent)
        if tpm_estimate is not None:
            self._limiter.adjust_now(identity, tpm_estimate, actual_tokens)

    async def drain(self) -> None:
        return None


class RedisSettler:
    def __init__(self, outbox: RedisOutbox, budgets: Budgets, counters: RedisCounters, limiter: RedisRateLimiter,
                 *, local_counters: DegradingCounters | None = None,
                 local_limiter: DegradingRateLimiter | None = None) -> None:
        self.outbox = outbox
        self.budgets = budgets
        self.counters = counters
        self.limiter = limiter
        self.local_counters = local_counters  # degrade mode: where a settlement goes when Redis cannot be reached
        self.local_limiter = local_limiter

    def settle(self, identity: Identity, reservation: Reservation | None, actual_cost: Decimal,
               tpm_estimate: int | None, actual_tokens: int) -> None:
        if reservation is not None and reservation.counters:
            local = self.local_counters.pop_local(reservation.request_id) if self.local_counters else None
            self.outbox.put(_Settle(self, reservation, cost_units(actual_cost), local))
        if tpm_estimate is not None:
            call = self.limiter.adjust_call(identity, tpm_estimate, actual_tokens)
            if call is not None:
                self.outbox.put(_Adjust(self, identity, tpm_estimate, actual_tokens, call))

    async def drain(self) -> None:
        await self.outbox.drain()


@dataclass(slots=True)
class _Settle:
    settler: RedisSettler
    reservation: Reservation
    units: int
    local: tuple[tuple[str, ...], int] | None  # degrade mode: its reservation on the local share, if made there
    tries: int = 0

    def commands(self) -> Sequence[Command]:
        r = self.reservation
        return (self.settler.counters.settle_call(r.request_id, r.counters, self.units),)

    def done(self, replies: list[Any]) -> None:
        reply = replies[0]
        if isinstance(reply, Exception):  # Redis answered, and refused it: not an outage
            log.error("budget settlement of request %s refused by Redis (%s)", self.reservation.request_id,
                      type(reply).__name__)
            return
        r = self.reservation
        self.settler.budgets.publish_spent(r.team, self.settler.counters.settled(r.counters, reply))

    def failed(self, error: BaseException) -> None:
        s, r = self.settler, self.reservation
        if s.local_counters is not None and isinstance(error, Degraded):
            s.budgets.publish_spent(r.team, s.local_counters.settle_locally(r.request_id, r.counters, self.units,
                                                                            self.local))
            return
        if self.tries == 0:
            log.warning("budget settlement of request %s could not reach Redis (%s); retrying until it does",
                        r.request_id, type(error).__name__)
        delay = _RETRY_S[min(self.tries, len(_RETRY_S) - 1)]
        self.tries += 1
        s.outbox.put_later(self, delay)


@dataclass(slots=True)
class _Adjust:
    settler: RedisSettler
    identity: Identity
    estimated: int
    actual: int
    call: ScriptCall

    def commands(self) -> Sequence[Command]:
        return (self.call,)

    def done(self, replies: list[Any]) -> None:
        if isinstance(replies[0], Exception):
            log.warning("tpm correction refused by Redis (%s)", type(replies[0]).__name__)

    def failed(self, error: BaseException) -> None:
        if self.settler.local_limiter is not None and isinstance(error, Degraded):
            self.settler.local_limiter.adjust_locally(self.identity, self.estimated, self.actual)
        else:  # the bucket refills on its own within the minute
            log.warning("tpm correction could not reach Redis (%s)", type(error).__name__)
