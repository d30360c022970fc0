"""Builds keys, budgets, rate limits and provider health from the config, for `create_app` and the CLI.

One function picks Redis-backed or in-process implementations, so the choice is made in one place. The caller
owns the engine and the Redis client (it closes them); `LimitServices.start/stop` run the background tasks.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.http.auth import Authenticator
from gateway.keys.secrets import derive_secret
from gateway.keys.store import KeyStore
from gateway.keys.sync import KeySync
from gateway.limits.admission import Admission, DegradingGate, Gate, MemoryGate, RedisGate
from gateway.limits.budgets import Budgets, MemoryCounters, ScopeKind, SpendSource
from gateway.limits.degrade import DegradingCounters, DegradingRateLimiter
from gateway.limits.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway.limits.redis_budgets import RedisCounters
from gateway.limits.settler import MemorySettler, RedisSettler, Settler
from gateway.limits.shared_state import SharedState
from gateway.limits.spend import spend_since
from gateway.state.base import CooldownPolicy, Health, LocalHealth
from gateway.state.connections import RedisConnections
from gateway.state.outbox import RedisOutbox
from gateway.state.redis_health import RedisHealth


def ledger_spend(engine: AsyncEngine) -> SpendSource:
    async def spend(kind: ScopeKind, name: str, since: datetime) -> Decimal:
        if kind == "key":
            return await spend_since(engine, key_id=name, since=since)
        return await spend_since(engine, team=name, since=since)

    return spend


def cooldown_policies(config: Any) -> dict[str, CooldownPolicy]:
    g = config.gateway
    return {
        name: CooldownPolicy(p.cooldown_after_failures or g.cooldown_after_failures,
                             p.cooldown_s if p.cooldown_s is not None else g.cooldown_s)
        for name, p in config.providers.items()
    }


@dataclass
class LimitServices:
    keys: KeyStore
    key_sync: KeySync
    auth: Authenticator
    budgets: Budgets
    ratelimit: RateLimiter
    health: Health
    admission: Admission
    settler: Settler
    shared_state: SharedState | None = None  # Redis watch of the degrade mode (gateway/limits/degrade.py)
    outbox: RedisOutbox | None = None  # Redis writes off the response path (settlements)
    connections: RedisConnections | None = None  # the request path's Redis calls (gateway/state/connections.py)

    async def start(self) -> None:
        await self.key_sync.start()
        if isinstance(self.health, RedisHealth):
            await self.health.start()
        if self.shared_state is not None:
            await self.shared_state.start()

    async def stop(self) -> None:
        if self.outbox is not None:  # settlements still queued land before the watch and the client stop
            await self.outbox.close()
        if self.connections is not None:
            await self.connections.close()
        if self.shared_state is not None:
            await self.shared_state.stop()
        await self.key_sync.stop()
        if isinstance(self.health, RedisHealth):
            await self.health.stop()


def build_limits(config: Any, engine: AsyncEngine, redis: Any | None = None, *,
                 metrics: Any | None = None, replica_id: str | None = None) -> LimitServices:
    g = config.gateway
    keys = KeyStore(engine, derive_secret(g))
    prefix = g.redis_prefix
    state: SharedState | None = None
    spend = ledger_spend(engine)

    def budgets_on(counters: Any) -> Budgets:
        return Budgets(counters, spend, timezone_name=g.reporting_timezone, metrics=metrics,
                       currency=g.reporting_currency)

    outbox: RedisOutbox | None = None
    connections: RedisConnections | None = None
    if redis is not None:
        counters = RedisCounters(redis, prefix)
        limiter = RedisRateLimiter(redis, prefix)
        health: Health = RedisHealth(redis, cooldown_policies(config), prefix=prefix)
        if g.on_shared_state_unavailable == "degrade":
            state = SharedState(redis, prefix, replica_id or uuid.uuid4().hex)
        # With degrade mode, the path's Redis calls give up at the shared state's deadline on their own.
        connections = RedisConnections(redis, deadline_s=state.deadline_s if state is not None else None)
        redis_gate = RedisGate(redis, limiter, counters, connections)
        gate: Gate = redis_gate
        shared_counters: Any = counters
        ratelimit: RateLimiter = limiter
        local_counters = local_limiter = None
        guard = None
        if state is not None:
            # Without Redis, keep serving on this replica's conservative share (refuse: a 503 instead).
            shared_counters = local_counters = DegradingCounters(counters, state)
            ratelimit = local_limiter = DegradingRateLimiter(limiter, state)
            gate = DegradingGate(redis_gate, local_limiter, local_counters, state)
            guard = functools.partial(state.call, bounded=connections.deadline_s is not None
                                      and connections.deadline_s <= state.deadline_s)
        budgets = budgets_on(shared_counters)
        outbox = RedisOutbox(connections, guard=guard)
        settler: Settler = RedisSettler(outbox, budgets, counters, limiter, local_counters=local_counters,
                                        local_limiter=local_limiter)
    else:
        memory_counters, memory_limiter = MemoryCounters(), MemoryRateLimiter()
        health = LocalHealth(cooldown_policies(config))
        gate, ratelimit = MemoryGate(memory_limiter, memory_counters), memory_limiter
        budgets = budgets_on(memory_counters)
        settler = MemorySettler(budgets, memory_counters, memory_limiter)
    return LimitServices(keys=keys, key_sync=KeySync(keys, redis, prefix=prefix),
                         auth=Authenticator(keys, require_api_key=g.require_api_key),
                         budgets=budgets, ratelimit=ratelimit, health=health, admission=Admission(gate, budgets),
                         settler=settler, shared_state=state, outbox=outbox, connections=connections)
