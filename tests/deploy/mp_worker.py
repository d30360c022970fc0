"""The body of one gateway worker process for the multiprocess metrics test (importable by a spawned child)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from gateway import metrics_multiprocess as mp
from gateway.metrics import Metrics

REQUEST_LABELS = ("auto", "deepseek", "deepseek-v2", "success")


class _GaugeWithContractMode(Gauge):
    """A Gauge that takes the mode GAUGE_MODES names unless given one (what gateway/metrics.py should pass)."""

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("multiprocess_mode", mp.GAUGE_MODES.get(name, "all"))
        super().__init__(name, *args, **kwargs)


def worker(increments: int, pending: int, healthy: int, version: int, conn: Any) -> None:
    """One gateway worker: runs in a fresh (spawned) interpreter with PROMETHEUS_MULTIPROC_DIR inherited."""
    import gateway.metrics

    # Until gateway/metrics.py passes each gauge's mode itself, give it the one GAUGE_MODES names (a no-op
    # once it does: an explicit mode wins).
    gateway.metrics.Gauge = _GaugeWithContractMode  # type: ignore[misc]
    metrics = Metrics(CollectorRegistry())
    metrics.requests.labels(*REQUEST_LABELS).inc(increments)
    metrics.duration.labels("deepseek", "deepseek-v2").observe(0.2)
    metrics.ledger_pending.inc(pending)
    metrics.provider_healthy.labels("deepseek").set(healthy)
    metrics.price_version.set(version)
    conn.send(os.getpid())
    conn.recv()  # stay alive until the parent has read /metrics
    conn.close()
