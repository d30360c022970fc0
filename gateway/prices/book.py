"""The price book: numbered, immutable price versions, each in force from its `effective_from`.

`PriceBook.current(now)` is what the request path calls (once per request, at its start); it must be cheap and
never do I/O. Persistence (ledger database) and replication (Redis) are layered on by `gateway/prices/store.py`.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timezone
from typing import Sequence

from gateway.config.schema import Config
from gateway.domain import PriceVersion

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def version_from_config(config: Config, version: int = 1, effective_from: datetime = EPOCH) -> PriceVersion:
    return PriceVersion(
        version=version,
        effective_from=effective_from,
        reporting_currency=config.gateway.reporting_currency,
        fx_rates=dict(config.fx_rates),
        prices={(d.provider, d.model): d.price.to_price() for d in config.deployments},
    )


class PriceBook:
    """All known versions, sorted by (effective_from, version). Scheduled ones take effect when their time comes."""

    def __init__(self, versions: Sequence[PriceVersion]) -> None:
        if not versions:
            raise ValueError("a price book needs at least one version")
        self._versions: list[PriceVersion] = []
        self._keys: list[tuple[datetime, int]] = []
        for v in versions:
            self.add(v)

    def add(self, version: PriceVersion) -> None:
        key = (version.effective_from, version.version)
        i = bisect.bisect(self._keys, key)
        self._keys.insert(i, key)
        self._versions.insert(i, version)

    def current(self, now: datetime) -> PriceVersion:
        """The version in force at `now`: latest effective_from <= now (the highest number among equals)."""
        i = bisect.bisect(self._keys, (now, float("inf")))  # type: ignore[arg-type]
        return self._versions[i - 1] if i else self._versions[0]

    def latest_number(self) -> int:
        return max(v.version for v in self._versions)

    def get(self, number: int) -> PriceVersion | None:
        return next((v for v in self._versions if v.version == number), None)

    def versions(self) -> list[PriceVersion]:
        return list(self._versions)
