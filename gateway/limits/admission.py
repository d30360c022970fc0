"""Admission: a request's rate limits (rpm, tpm) and its budget reservation, decided together, in one step.

The pipeline calls `Admission.admit` once, after ranking (the reservation needs the worst case of the attempts the
ranking chose). Both checks pass and both are charged, or neither is: a request refused by its rate limit (429
`rate_limit_exceeded`, with Retry-After; checked first) reserves no budget, and one refused by its budget (429
`budget_exceeded`) takes no rpm or tpm. The budget side keeps its protocol (`Budgets.reserve_by`): a counter that
does not exist is seeded from the ledger, and the whole admission is tried again.

A gate makes the one atomic attempt:
- `MemoryGate`: the in-process limiter and counters, in one synchronous step (the embedded path);
- `RedisGate`: one Lua script, one round trip: the rate limiter's `rl_take` and the budgets' `reserve_plan`
  (the same functions their own scripts run; the exact decimal-string arithmetic of `_BIGINT`);
  KEYS = [rpm bucket, tpm bucket, hash1, holds1, ...]  ARGV = [rpm, tpm, tokens, request id, units, hold ms,
  limit1, ttl1, ...] -> {"limited", seconds} | RESERVE's replies;
- `DegradingGate` (`on_shared_state_unavailable: degrade`): `RedisGate` while Redis answers, the local shares of
  gateway/limits/degrade.py (both, in one step) while it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Protocol

from gateway.decisions import limits as d
from gateway.keys.identity import Identity
from gateway.limits import ratelimit
from gateway.limits.budgets import Budgets, MemoryCounters, Reservation, ReserveOutcome, Scope
from gateway.limits.degrade import DegradingCounters, DegradingRateLimiter
from gateway.limits.ratelimit import RL_FUNCTIONS, MemoryRateLimiter, RedisRateLimiter, refusal, nothing
from gateway.limits.redis_budgets import _BIGINT, RESERVE_FUNCTIONS, RedisCounters, reserve_outcome
from gateway.limits.shared_state import Degraded, SharedState
from gateway.state.connections import RedisConnections

_ADMIT = _BIGINT + RL_FUNCTIONS + RESERVE_FUNCTIONS + """
local wait, charge = rl_take(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then return {'limited', tostring(wait)} end
local refused, reserve = reserve_plan(2, (#KEYS - 2) / 2, 3)
if not reserve then return refused end
charge()
return reserve()
"""


@dataclass(frozen=True, slots=True)
class Ask:
    """One admission attempt: the caller, the tokens its rate limit is charged (None: no rate limit applies), the
    units of its worst case and the budget counters they are reserved on (none: no budget applies)."""

    request_id: str
    identity: Identity
    tokens: int | None
    units: int
    scopes: list[Scope]
    hold_s: float


class Gate(Protocol):
    async def admit(self, ask: Ask) -> ReserveOutcome:
        """Admit (charging both), or raise RateLimited, or return the budget's refusal / the counters to seed
        (charging nothing)."""


class Admission:
    def __init__(self, gate: Gate, budgets: Budgets) -> None:
        self.gate = gate
        self.budgets = budgets

    @staticmethod
    def rate_limited(identity: Identity) -> bool:
        """Whether the caller has an rpm or tpm limit."""
        return ratelimit.applies(identity)

    @staticmethod
    def budgeted(identity: Identity) -> bool:
        """Whether the caller has a key or team budget (then the pipeline prices the worst case)."""
        return Budgets.applies(identity)

    async def admit(self, identity: Identity, request_id: str, tokens: int | None,
                    worst_case_cost: Decimal | None) -> Reservation:
        """Charge `tokens` to the caller's rate limits (when not None) and reserve `worst_case_cost` on its budgets
        (when not None), together; or raise RateLimited / BudgetExceeded having charged nothing."""
        b = self.budgets
        scopes = b.scopes(identity) if worst_case_cost is not None else []
        units = d.cost_units(worst_case_cost) if worst_case_cost is not None else 0
        ask = Ask(request_id, identity, None if tokens is None else max(0, tokens), units, scopes, b.hold_s)
        if not scopes:
            await self.gate.admit(ask)  # no counter: nothing to seed, and no budget to refuse
            return Reservation(request_id, identity.team, 0)
        return await b.reserve_by(identity, request_id, units, scopes, lambda: self.gate.admit(ask))


class MemoryGate:
    def __init__(self, limiter: MemoryRateLimiter, counters: MemoryCounters) -> None:
        self._limiter = limiter
        self._counters = counters

    async def admit(self, ask: Ask) -> ReserveOutcome:
        charge = nothing if ask.tokens is None else self._limiter.take(ask.identity, ask.tokens)
        return self._counters.reserve_now(ask.request_id, ask.units, ask.scopes, ask.hold_s, charge)


class RedisGate:
    def __init__(self, redis: Any, limiter: RedisRateLimiter, counters: RedisCounters,
                 connections: RedisConnections | None = None) -> None:
        self._script = redis.register_script(_ADMIT)
        self._connections = connections or RedisConnections(redis)
        self._limiter = limiter
        self._counters = counters

    @property
    def deadline_s(self) -> float | None:
        """How long an admission may wait on Redis before it fails on its own (None: no bound)."""
        return self._connections.deadline_s

    async def admit(self, ask: Ask) -> ReserveOutcome:
        who = ask.identity
        key_id = who.key_id or ""
        rated = ask.tokens is not None and key_id != ""
        keys, args = self._counters.reserve_keys_args(ask.request_id, ask.units, ask.scopes, ask.hold_s)
        result = await self._connections.evalsha(
            self._script, [self._limiter.key(key_id, "rpm"), self._limiter.key(key_id, "tpm"), *keys],
            [(who.rpm or 0) if rated else 0, (who.tpm or 0) if rated else 0, ask.tokens or 0, *args])
        if result[0] in (b"limited", "limited"):
            raise refusal(who, float(result[1]))
        return reserve_outcome(result)


class DegradingGate:
    def __init__(self, inner: RedisGate, limiter: DegradingRateLimiter, counters: DegradingCounters,
                 state: SharedState) -> None:
        self._inner = inner
        self._limiter = limiter
        self._counters = counters
        self._state = state
        self._bounded = inner.deadline_s is not None and inner.deadline_s <= state.deadline_s

    async def admit(self, ask: Ask) -> ReserveOutcome:
        try:
            outcome = await self._state.call(lambda: self._inner.admit(ask), bounded=self._bounded)
        except Degraded:
            charge: Callable[[], None] = nothing
            if ask.tokens is not None:
                charge = self._limiter.take_locally(ask.identity, ask.tokens)
            return self._counters.reserve_locally(ask.request_id, ask.units, ask.scopes, charge)
        self._counters.observe(ask.scopes, outcome)
        return outcome
