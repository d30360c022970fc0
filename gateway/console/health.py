"""The health page's numbers, from this process's own Prometheus registry (the numbers `/metrics` serves).

Counters only ever grow, so "recent" rates need two readings: a small sampler (started with the console's routes)
reads the registry every `SAMPLE_EVERY_S` seconds and keeps `KEEP` readings; the page compares now with the
oldest kept one (about five minutes back once the process has run that long). Everything but the sampler's
loop is a pure function over plain data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Mapping

SAMPLE_EVERY_S = 10.0
KEEP = 31  # 30 intervals of 10 s: five minutes

Labels = tuple[tuple[str, str], ...]
Snapshot = dict[str, dict[Labels, float]]  # sample name -> labels -> value


def snapshot(registry: Any) -> Snapshot:
    out: Snapshot = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith("gateway_") and not s.name.endswith(("_created", "_bucket")):
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def _by(snap: Snapshot, name: str, label: str, where: Mapping[str, str] | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in snap.get(name, {}).items():
        d = dict(labels)
        if where and any(d.get(k) != v for k, v in where.items()):
            continue
        out[d.get(label, "")] = out.get(d.get(label, ""), 0.0) + value
    return out


@dataclass(frozen=True, slots=True)
class ProviderRow:
    name: str
    healthy: bool
    requests: float  # client requests served by it (any outcome) in the window
    errors: float  # failed upstream attempts
    fallbacks: float  # moves away from it after a failure

    @property
    def error_rate(self) -> float | None:
        attempts = self.requests + self.errors
        return self.errors / attempts if attempts else None


@dataclass(frozen=True, slots=True)
class Health:
    window_s: float | None  # None: since the process started (no older reading yet)
    providers: tuple[ProviderRow, ...]
    outcomes: dict[str, float]
    fallbacks_by_reason: dict[str, float]
    ledger: dict[str, float]  # gateway_ledger_* gauges (pending rows; the spool's, where the ledger has one)
    feeds: tuple[tuple[str, float], ...]  # (feed, last success unix time)


def _delta(now: Snapshot, then: Snapshot | None, name: str) -> Snapshot:
    if then is None:
        return {name: now.get(name, {})}
    old = then.get(name, {})
    return {name: {k: v - old.get(k, 0.0) for k, v in now.get(name, {}).items()}}


def summarize(providers: Iterable[str], cooling: frozenset[str], now: Snapshot, then: Snapshot | None,
              window_s: float | None) -> Health:
    req = _delta(now, then, "gateway_requests_total")
    err = _delta(now, then, "gateway_upstream_errors_total")
    fb = _delta(now, then, "gateway_fallbacks_total")
    served = _by(req, "gateway_requests_total", "provider")
    errors = _by(err, "gateway_upstream_errors_total", "provider")
    moved = _by(fb, "gateway_fallbacks_total", "from_provider")
    rows = tuple(ProviderRow(p, p not in cooling, served.get(p, 0.0), errors.get(p, 0.0), moved.get(p, 0.0))
                 for p in providers)
    ledger = {name: sum(values.values()) for name, values in now.items() if name.startswith("gateway_ledger_")}
    feeds = tuple(sorted(_by(now, "gateway_price_feed_last_success_timestamp_seconds", "feed").items()))
    return Health(window_s, rows, _by(req, "gateway_requests_total", "outcome"),
                  _by(fb, "gateway_fallbacks_total", "reason"), ledger, feeds)


class Sampler:
    """Readings of the registry, oldest first, taken every SAMPLE_EVERY_S seconds while the app runs."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self.readings: deque[tuple[float, Snapshot]] = deque(maxlen=KEEP)

    def sample(self) -> None:
        self.readings.append((time.monotonic(), snapshot(self._registry)))

    def baseline(self) -> tuple[float | None, Snapshot | None]:
        """(seconds since the oldest reading, that reading), or (None, None) before the first one."""
        if not self.readings:
            return None, None
        t, snap = self.readings[0]
        return time.monotonic() - t, snap

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(SAMPLE_EVERY_S)

        task = asyncio.create_task(loop(), name="console-health-sampler")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
