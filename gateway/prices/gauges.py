"""The price gauges: `gateway_price_per_million_tokens` and `gateway_price_table_version` follow the version in force.

`update_price_gauges` sets them from one version (call it at start-up). `PriceGaugeWatcher` keeps them right
afterwards: a version can come into force without any event (a scheduled `effective_from` arriving), so it
checks `book.current(now)` twice a second — an in-memory lookup — and rewrites the gauges when the number moved.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from typing import Callable, Iterable

from gateway.domain import Deployment, PriceVersion
from gateway.metrics import Metrics
from gateway.prices.book import PriceBook
from gateway.tasks import cancel_and_wait

_DIRECTIONS = ("input", "cached_input", "output", "cache_write")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def update_price_gauges(metrics: Metrics, version: PriceVersion, deployments: Iterable[Deployment],
                        previous: set[tuple[str, str, str, str]] | None = None) -> set[tuple[str, str, str, str]]:
    """Set the base price per 1M tokens of every deployment, in its own currency; returns the label sets written.

    Pass the previous call's result as `previous` so series whose labels changed (a deployment re-priced in
    another currency) are removed rather than left showing a stale price.
    """
    written: set[tuple[str, str, str, str]] = set()
    for d in deployments:
        price = version.prices.get(d.key)
        if price is None:
            continue
        scale = 1_000_000 // price.per  # per 1K -> per 1M is x1000: exact in Decimal, float only at the sample
        cached = price.cached_input if price.cached_input is not None else price.input
        values = [price.input, cached, price.output]
        if price.cache_write is not None:  # shown where set: a vendor without cache writes has no such price
            values.append(price.cache_write)
        for direction, value in zip(_DIRECTIONS, values):
            labels = (d.provider, d.model, direction, price.currency)
            metrics.price.labels(*labels).set(float(value * scale))
            written.add(labels)
    for stale in (previous or set()) - written:
        with contextlib.suppress(KeyError):
            metrics.price.remove(*stale)
    metrics.price_version.set(version.version)
    return written


class PriceGaugeWatcher:
    """Keeps the price gauges on the version in force. `start()` sets them at once; `stop()` ends the watch."""

    def __init__(self, metrics: Metrics, book: Callable[[], PriceBook], deployments: Iterable[Deployment],
                 clock: Callable[[], datetime] = _now, interval_s: float = 0.5) -> None:
        self._metrics = metrics
        self._book = book  # a callable, e.g. `lambda: store.book`, so a replaced book is followed too
        self._deployments = list(deployments)
        self._clock = clock
        self._interval_s = interval_s
        self._shown: int | None = None
        self._labels: set[tuple[str, str, str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    def check(self) -> bool:
        """Rewrite the gauges if the version in force changed; True when it did. Cheap; safe to call often."""
        version = self._book().current(self._clock())
        if version.version == self._shown:
            return False
        self._labels = update_price_gauges(self._metrics, version, self._deployments, self._labels)
        self._shown = version.version
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.check()

    async def start(self) -> None:
        self.check()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="price-gauges")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
