"""Budgets per key and per team: reserve the worst case before a request goes upstream, settle the actual cost.

`Budgets` holds the scopes and the reservation protocol; the request path reserves through the admission
(gateway/limits/admission.py: with the rate limits, in one step) and settles through the settler
(gateway/limits/settler.py: off the response path). The counters behind it are either `MemoryCounters` (one
process, no Redis) or `gateway.limits.redis_budgets.RedisCounters` (every replica, one Lua script per operation).
Both have the same semantics:

- a counter exists per scope (`key:<id>` / `team:<name>`) and calendar period (`d2024-05-21` / `m2024-05`), in
  integer units of 1e-9 of the reporting currency: settled `spent` plus outstanding `reserved`;
- reserve is check-and-reserve across the key's AND the team's counters at once: both fit, or neither changes;
- a counter that does not exist (new period, Redis lost it, fresh process) is seeded from the ledger's billed spend
  for that period, then the reservation is retried;
- settle is idempotent by request id: the first call releases the reservation and adds the actual cost, later
  calls do nothing. A reservation never settled (its process died) is released after `hold_s`.

Why spend can never exceed a budget: see `gateway.decisions.limits` (limits rounded down, costs rounded up, and
admission requires spent + reserved + worst case <= limit, atomically). The one gap is a request whose vendor bills
more than its worst case (its reservation did not cover it); the lead's worst case already includes every output
token the request may generate, so this takes a vendor billing beyond max_tokens.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Awaitable, Callable, Literal, Protocol

from gateway.decisions import limits as d
from gateway.errors import BudgetExceeded
from gateway.keys.identity import Identity

ScopeKind = Literal["key", "team"]
_SCOPES_VALID_S = 60
_SCOPES_CACHED = 10_000
SpendSource = Callable[[ScopeKind, str, datetime], Awaitable[Decimal]]  # (kind, key id or team, since) -> spend


@dataclass(frozen=True, slots=True)
class Scope:
    """One counter a request is charged to, with its limit for this period."""

    kind: ScopeKind
    name: str
    counter: str  # e.g. "team:search:m2024-05"
    limit: int  # units
    ttl_s: int
    since: datetime  # the period's start (for re-seeding from the ledger)


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    team: str
    units: int
    counters: tuple[str, ...] = ()  # empty: nothing to settle (no budget applies)


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    status: Literal["ok", "deny", "seed"]
    scope_index: int = 0  # deny: the scope that did not fit
    missing: tuple[int, ...] = ()  # seed: indexes of scopes whose counter does not exist
    totals: tuple[int, ...] = ()  # ok (when known): each scope's spent + reserved after this reservation


class Counters(Protocol):
    async def reserve(self, request_id: str, units: int, scopes: list[Scope], hold_s: float) -> ReserveOutcome: ...

    async def seed(self, counter: str, units: int, ttl_s: int) -> None:
        """Create the counter with `units` spent, unless it exists (a concurrent seeder won)."""

    async def settle(self, request_id: str, counters: tuple[str, ...], actual_units: int) -> dict[str, int]:
        """Release the reservation and add the actual cost, once; returns each existing counter's spent."""

    async def spent(self, counter: str) -> int | None: ...


class Budgets:
    def __init__(self, counters: Counters, spend: SpendSource, *, timezone_name: str = "UTC",
                 hold_s: float = 3600.0, metrics: object | None = None, currency: str = "CNY",
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._counters = counters
        self._spend = spend
        self._tz = timezone_name
        self._hold_s = hold_s
        self._metrics = metrics
        self._currency = currency
        self._clock = clock
        self._scope_cache: dict[tuple[object, ...], tuple[list[Scope], datetime, datetime]] = {}

    @staticmethod
    def applies(identity: Identity) -> bool:
        """Whether `scopes` would be non-empty (a budget on the key, or on the team): the pipeline skips the
        reservation, and the worst-case pricing it needs, when not."""
        key_budget = getattr(identity, "key_budget", None)
        return getattr(identity, "team_budget", None) is not None or (
            key_budget is not None and identity.key_id is not None)

    def scopes(self, identity: Identity, now: datetime | None = None) -> list[Scope]:
        """The counters a request of `identity` is charged to now (a shared list: not to be changed). Kept per
        caller for up to a minute within the period (calendar arithmetic in the reporting zone costs ~30 us a
        call); a counter's TTL is then up to that minute longer than the period's end plus a day."""
        if now is not None:
            return self._scopes(identity, now)
        now = self._clock()
        key = (identity.key_id, identity.team, identity.key_budget, identity.team_budget)
        hit = self._scope_cache.get(key)
        if hit is not None and hit[1] <= now < hit[2]:
            return hit[0]
        out = self._scopes(identity, now)
        valid_s = min([_SCOPES_VALID_S, *(s.ttl_s - d.LATE_SETTLEMENT_S - 1 for s in out)])
        if len(self._scope_cache) >= _SCOPES_CACHED:
            self._scope_cache.clear()
        self._scope_cache[key] = (out, now, now + timedelta(seconds=valid_s))
        return out

    def _scopes(self, identity: Identity, now: datetime) -> list[Scope]:
        out = []
        for kind, name, budget in (("key", identity.key_id, identity.key_budget),
                                   ("team", identity.team, identity.team_budget)):
            if name is None or budget is None:
                continue
            pid = d.period_id(now, budget.period, self._tz)
            out.append(Scope(kind, name, f"{kind}:{name}:{pid}", d.limit_units(budget.amount),  # type: ignore[arg-type]
                             d.counter_ttl_s(now, budget.period, self._tz),
                             d.period_start(now, budget.period, self._tz)))
        return out

    @property
    def hold_s(self) -> float:
        return self._hold_s

    async def reserve(self, identity: Identity, request_id: str, worst_case_cost: Decimal) -> Reservation:
        """Reserve the worst case against the key's and the team's budgets, or raise BudgetExceeded."""
        scopes = self.scopes(identity)
        if not scopes:
            return Reservation(request_id, identity.team, 0)
        units = d.cost_units(worst_case_cost)
        return await self.reserve_by(identity, request_id, units, scopes,
                                     lambda: self._counters.reserve(request_id, units, scopes, self._hold_s))

    async def reserve_by(self, identity: Identity, request_id: str, units: int, scopes: list[Scope],
                         attempt: Callable[[], Awaitable[ReserveOutcome]]) -> Reservation:
        """The reservation protocol around one atomic `attempt` (the counters' reserve, or the admission's
        rate limit + reserve): admitted, refused (BudgetExceeded), or seed the missing counters and try again."""
        for _ in range(4):
            outcome = await attempt()
            if outcome.status == "ok":
                self._publish_limit(identity)
                return Reservation(request_id, identity.team, units, tuple(s.counter for s in scopes))
            if outcome.status == "deny":
                scope = scopes[outcome.scope_index]
                what = "this key's" if scope.kind == "key" else f"team {scope.name!r}'s"
                period = "day" if scope.counter.rsplit(":", 1)[1].startswith("d") else "month"
                raise BudgetExceeded(f"{what} budget for the current {period} is exhausted")
            for i in outcome.missing:
                scope = scopes[i]
                spent = await self._spend(scope.kind, scope.name, scope.since)
                await self._counters.seed(scope.counter, d.cost_units(spent), scope.ttl_s)
        raise RuntimeError("budget counters could not be seeded")  # only if counters vanish in a loop

    async def settle(self, reservation: Reservation, actual_cost: Decimal) -> None:
        """Replace the reservation by the actual cost (0 when nothing was billed). Safe to call twice."""
        if not reservation.counters:
            return
        spent = await self._counters.settle(reservation.request_id, reservation.counters,
                                            d.cost_units(actual_cost))
        self.publish_spent(reservation.team, spent)

    async def spent(self, identity: Identity, kind: ScopeKind) -> Decimal | None:
        """Settled spend in the current period of the key's or team's budget (None without a budget)."""
        for scope in self.scopes(identity):
            if scope.kind == kind:
                units = await self._counters.spent(scope.counter)
                if units is None:  # not seeded yet: the ledger knows
                    return await self._spend(scope.kind, scope.name, scope.since)
                return d.units_to_money(units)
        return None

    # The team gauges (contract section 6); key budgets have no metric of their own.
    def _publish_limit(self, identity: Identity) -> None:
        if self._metrics is not None and identity.team_budget is not None:
            self._metrics.budget_limit.labels(identity.team, self._currency).set(  # type: ignore[attr-defined]
                float(identity.team_budget.amount))

    def publish_spent(self, team: str, spent: dict[str, int]) -> None:
        if self._metrics is None:
            return
        prefix = f"team:{team}:"
        for counter, units in spent.items():
            if counter.startswith(prefix):
                self._metrics.budget_spent.labels(team, self._currency).set(  # type: ignore[attr-defined]
                    float(d.units_to_money(units)))


@dataclass
class _Counter:
    spent: int
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # request id -> (units, deadline)
    expires: float = 0.0


class MemoryCounters:
    """The in-process counters: the same semantics as the Redis script, atomic because every operation is
    synchronous (the async methods are the `Counters` interface over the same code)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, settled_ttl_s: float = 2 * 86_400) -> None:
        self._clock = clock
        self._counters: dict[str, _Counter] = {}
        # request id -> when its marker may be forgotten; in settlement order, so expiry is from the front
        self._settled: OrderedDict[str, float] = OrderedDict()
        self._settled_ttl = settled_ttl_s

    def _get(self, name: str, now: float) -> _Counter | None:
        c = self._counters.get(name)
        if c is not None and c.expires <= now:
            del self._counters[name]
            return None
        return c

    async def reserve(self, request_id: str, units: int, scopes: list[Scope], hold_s: float) -> ReserveOutcome:
        return self.reserve_now(request_id, units, scopes, hold_s)

    def reserve_now(self, request_id: str, units: int, scopes: list[Scope], hold_s: float,
                    on_admit: Callable[[], None] | None = None) -> ReserveOutcome:
        """`reserve`; `on_admit` is called when (and only when) the reservation is made, in the same step (the
        admission charges the rate limit there: both happen, or neither)."""
        now = self._clock()
        found = [self._get(s.counter, now) for s in scopes]
        missing = tuple(i for i, c in enumerate(found) if c is None)
        if missing:
            return ReserveOutcome("seed", missing=missing)
        counters = [c for c in found if c is not None]
        for c in counters:  # release holds of requests that never settled
            for rid, (held, deadline) in list(c.holds.items()):
                if deadline <= now:
                    c.reserved -= held
                    del c.holds[rid]
        if any(request_id in c.holds for c in counters):
            return ReserveOutcome("ok")
        for i, (c, s) in enumerate(zip(counters, scopes)):
            if not d.admits(d.CounterState(c.spent, c.reserved), s.limit, units):
                return ReserveOutcome("deny", scope_index=i)
        if on_admit is not None:
            on_admit()
        for c, s in zip(counters, scopes):
            c.reserved += units
            c.holds[request_id] = (units, now + hold_s)
            c.expires = now + s.ttl_s
        return ReserveOutcome("ok")

    async def seed(self, counter: str, units: int, ttl_s: int) -> None:
        now = self._clock()
        if self._get(counter, now) is None:
            self._counters[counter] = _Counter(spent=units, expires=now + ttl_s)

    async def settle(self, request_id: str, counters: tuple[str, ...], actual_units: int) -> dict[str, int]:
        return self.settle_now(request_id, counters, actual_units)

    def settle_now(self, request_id: str, counters: tuple[str, ...], actual_units: int) -> dict[str, int]:
        now = self._clock()
        settled = self._settled
        while settled and next(iter(settled.values())) <= now:
            settled.popitem(last=False)
        if request_id in settled:
            return {}
        settled[request_id] = now + self._settled_ttl
        out = {}
        for name in counters:
            c = self._get(name, now)
            if c is None:  # expired: the period is long over; the ledger holds the spend
                continue
            held = c.holds.pop(request_id, None)
            if held is not None:
                c.reserved -= held[0]
            c.spent += actual_units
            out[name] = c.spent
        return out

    async def spent(self, counter: str) -> int | None:
        c = self._get(counter, self._clock())
        return None if c is None else c.spent
