"""gateway/metrics_multiprocess.py: one /metrics for several worker processes (prometheus-client multiprocess)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics_multiprocess as mp
from gateway.metrics import Metrics
from tests.deploy.mp_worker import REQUEST_LABELS, worker


def _scrape(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _requests(samples: dict[Any, float]) -> float:
    labels = tuple(sorted(zip(("route", "provider", "model", "outcome"), REQUEST_LABELS)))
    return samples[("gateway_requests_total", labels)]


class _Workers:
    """Spawned worker processes that record metrics, then wait to be released."""

    def __init__(self, args: list[tuple[int, int, int, int]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes = []
        self.procs = []
        self.pids = []
        for a in args:  # one after the other, so the last one's gauge values are the most recent
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(*a, child))
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
            self.pids.append(parent.recv())  # it has recorded its metrics

    def release(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs):
            pipe.send("done")
            proc.join(timeout=30)
            pipe.close()
            assert proc.exitcode == 0


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(mp.ENV_VAR, str(tmp_path / "stale-value"))  # restored after the test
    return mp.prepare_multiprocess_dir(tmp_path / "metrics")


def test_two_worker_processes_are_aggregated_into_one_exposition(multiproc_dir: Path) -> None:
    assert os.environ[mp.ENV_VAR] == str(multiproc_dir)
    workers = _Workers([(3, 2, 0, 8), (4, 5, 1, 7)])
    try:
        body, content_type = mp.metrics_response(registry=None)
        samples = _scrape(body)
    finally:
        workers.release()
    assert content_type.startswith("text/plain")
    assert _requests(samples) == 7  # counters: summed
    assert samples[("gateway_request_duration_seconds_count", (("model", "deepseek-v2"), ("provider", "deepseek")))] == 2
    assert samples[("gateway_ledger_pending_rows", ())] == 7  # livesum
    assert samples[("gateway_provider_healthy", (("provider", "deepseek"),))] == 1  # the latest reading
    assert samples[("gateway_price_table_version", ())] == 8  # the newest version, though set earlier
    assert not any(dict(labels).get("pid") for _, labels in samples)  # one series per label set, no pid label


def test_exited_workers_keep_their_counts_but_not_their_live_gauges(multiproc_dir: Path) -> None:
    workers = _Workers([(3, 2, 1, 7), (4, 5, 1, 8)])
    workers.release()
    samples = _scrape(mp.metrics_response(registry=None)[0])
    assert _requests(samples) == 7  # billed traffic stays counted
    assert ("gateway_ledger_pending_rows", ()) not in samples  # a dead worker's queue is not pending
    assert ("gateway_provider_healthy", (("provider", "deepseek"),)) not in samples
    assert samples[("gateway_price_table_version", ())] == 8


def test_preparing_the_directory_again_means_a_restart_does_not_double_count(multiproc_dir: Path) -> None:
    _Workers([(3, 0, 1, 1), (4, 0, 1, 1)]).release()
    assert _requests(_scrape(mp.metrics_response(registry=None)[0])) == 7
    (multiproc_dir / "notes.txt").write_text("not ours")
    mp.prepare_multiprocess_dir()  # the restart: same directory, from the environment
    assert not list(multiproc_dir.glob("*.db"))
    assert (multiproc_dir / "notes.txt").read_text() == "not ours"  # only the client's own files are removed
    _Workers([(5, 0, 1, 1), (6, 0, 1, 1)]).release()
    assert _requests(_scrape(mp.metrics_response(registry=None)[0])) == 11


def test_without_the_directory_the_given_registry_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mp.ENV_VAR, raising=False)
    metrics = Metrics(CollectorRegistry())
    metrics.requests.labels(*REQUEST_LABELS).inc(2)
    body, content_type = mp.metrics_response(metrics.registry)
    assert _requests(_scrape(body)) == 2
    assert content_type.startswith("text/plain; version=0.0.4")  # what Prometheus 2.x expects
    body, content_type = mp.metrics_response(metrics.registry, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_prepare_creates_a_private_directory_when_none_is_configured() -> None:
    env: dict[str, str] = {}
    path = mp.prepare_multiprocess_dir(env=env)
    try:
        assert path.is_dir() and env[mp.ENV_VAR] == str(path)
    finally:
        path.rmdir()


def test_gauge_modes_name_every_gauge_of_the_metrics_module() -> None:
    gauges = {g._name for g in vars(Metrics(CollectorRegistry())).values() if getattr(g, "_type", None) == "gauge"}
    assert set(mp.GAUGE_MODES) == gauges
    assert set(mp.GAUGE_MODES.values()) <= Gauge._MULTIPROC_MODES


def test_metrics_module_declares_the_multiprocess_mode_of_each_gauge() -> None:
    # Without it, each worker's gauge is exported as its own series with a `pid` label.
    declared = {g._name: g._multiprocess_mode for g in vars(Metrics(CollectorRegistry())).values()
                if getattr(g, "_type", None) == "gauge"}
    assert declared == mp.GAUGE_MODES
