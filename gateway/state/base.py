"""Shared state the request path consults: provider health (cool-downs) and recent latency.

`LocalHealth` keeps it in process (the embedded default). A Redis-backed implementation shares it across
replicas; it must keep `cooling()` synchronous and cheap (a local mirror refreshed in the background), because
the router reads it on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from gateway.domain import DeploymentKey


@dataclass(frozen=True)
class CooldownPolicy:
    after_failures: int
    cooldown_s: float


class Health(Protocol):
    def cooling(self) -> frozenset[str]:
        """Providers to skip right now."""

    def latencies(self) -> dict[DeploymentKey, float]:
        """Recent latency (seconds, smoothed) per deployment, for tie-breaks."""

    async def record_success(self, key: DeploymentKey, latency_s: float) -> None: ...

    async def record_failure(self, provider: str, *, rate_limited: bool) -> None:
        """A failure; a 429 cools the provider down at once, others after N consecutive failures."""


class HealthView:
    """What this process knows of provider health: cool-down deadlines (on its own monotonic clock) and smoothed
    latencies. The router reads it on every request, so reading never does I/O. Subclasses decide how deadlines
    arrive: `LocalHealth` from this process's failures, `RedisHealth` from every replica's."""

    _ALPHA = 0.2  # smoothing of recent latency: recent requests dominate, one outlier does not

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._latency: dict[DeploymentKey, float] = {}
        self._cooling_cache: frozenset[str] = frozenset()

    def cooling(self) -> frozenset[str]:
        if not self._until:
            return frozenset()
        now = self._clock()
        expired = [p for p, t in self._until.items() if t <= now]
        for p in expired:
            del self._until[p]
        if expired or len(self._cooling_cache) != len(self._until):
            self._cooling_cache = frozenset(self._until)
        return self._cooling_cache

    def latencies(self) -> dict[DeploymentKey, float]:
        return self._latency

    def _observe_latency(self, key: DeploymentKey, latency_s: float) -> None:
        prev = self._latency.get(key)
        self._latency[key] = latency_s if prev is None else prev + self._ALPHA * (latency_s - prev)


class LocalHealth(HealthView):
    def __init__(self, policies: dict[str, CooldownPolicy], clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._policies = policies
        self._failures: dict[str, int] = {}

    async def record_success(self, key: DeploymentKey, latency_s: float) -> None:
        self._failures.pop(key[0], None)
        self._observe_latency(key, latency_s)

    async def record_failure(self, provider: str, *, rate_limited: bool) -> None:
        policy = self._policies.get(provider, CooldownPolicy(3, 30.0))
        count = self._failures.get(provider, 0) + 1
        self._failures[provider] = count
        if rate_limited or count >= policy.after_failures:
            self._until[provider] = self._clock() + policy.cooldown_s
            self._failures[provider] = 0
