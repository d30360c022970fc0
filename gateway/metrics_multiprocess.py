"""One `/metrics` for all workers of `gateway serve --workers N` (prometheus-client's multiprocess mode).

How it fits together:

1. The parent process calls `prepare_multiprocess_dir()` *before* any worker starts. It empties the directory of
   the previous run's files (a restart must not add the old counts to the new ones) and sets
   `PROMETHEUS_MULTIPROC_DIR`, which the workers inherit. prometheus-client decides at import time whether it
   runs in multiprocess mode, so the variable must be in the environment before a worker imports it.
2. Every worker builds `gateway.metrics.Metrics` as usual; each metric writes its values to a memory-mapped file
   per process in that directory. Gauges aggregate across workers as `GAUGE_MODES` says.
3. `/metrics`, in whichever worker answers it, returns `metrics_response(registry, accept)`: the merge of every
   worker's files when the variable is set, else the given registry (the single-process case).
4. The gauges that mirror state (`Services.refresh_gauges`: provider health, ledger backlog, price version) are
   refreshed by the answering worker at scrape time *and*, in this mode, once a second in every worker
   (gateway/http/ops_routes.py), so the other workers' shares are at most a second old.

Counters and histograms of a worker that exited stay in the merge (they are billed traffic: sums must keep
equalling the ledger). Gauges in a `live*` mode describe running processes only, so the files of workers that
are gone are dropped before each merge (`mark_dead_workers`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

# How each gauge of gateway/metrics.py combines the values of several workers into one sample.
GAUGE_MODES: dict[str, str] = {
    # Same table in every worker; the last value set is the current one (set() only, never inc/dec).
    "gateway_price_per_million_tokens": "mostrecent",
    # Versions only increase: the newest any worker has applied.
    "gateway_price_table_version": "max",
    # Health is set from the (shared, with Redis) cool-down state when a worker refreshes its gauges (every
    # second): the freshest reading of a running worker wins.
    "gateway_provider_healthy": "livemostrecent",
    # Shared team budget state, read by each worker: the freshest reading wins (set() only).
    "gateway_budget_spent": "mostrecent",
    "gateway_budget_limit": "mostrecent",
    # Each worker has its own write queue, refreshed every second: the sum over running workers (a dead worker's
    # queue is gone; its rows are recovered at start-up).
    "gateway_ledger_pending_rows": "livesum",
    # The latest success of any worker; kept after a worker dies, so a feed nobody polls any more goes stale
    # (and alerts) instead of vanishing.
    "gateway_price_feed_last_success_timestamp_seconds": "max",
}

_DB_FILE = re.compile(r"^[a-z]+(?:_[a-z]+)?_(\d+)\.db$")
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The directory in use, or None when running single-process."""
    env = os.environ if env is None else env
    return env.get(ENV_VAR) or None


def metrics_dir_in_use(env: Mapping[str, str] | None = None) -> bool:
    """True when `/metrics` merges the multiprocess directory (a worker of `gateway serve --workers N`)."""
    return multiprocess_dir(env) is not None


def prepare_multiprocess_dir(
    path: str | os.PathLike[str] | None = None,
    env: MutableMapping[str, str] | None = None,
) -> Path:
    """Create (or empty) the directory the workers write to and export it as `PROMETHEUS_MULTIPROC_DIR`.

    `path` defaults to the variable's current value, else a new private temporary directory. Only the
    client's own `*.db` files are removed, so pointing it at a directory holding anything else is harmless.
    Call once in the parent, before the workers start; never while they run.
    """
    env = os.environ if env is None else env
    if path is None:
        path = env.get(ENV_VAR) or tempfile.mkdtemp(prefix="gateway-metrics-")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.iterdir():
        if f.is_file() and _DB_FILE.match(f.name):
            f.unlink()
    env[ENV_VAR] = str(directory)
    return directory


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def mark_dead_workers(path: str | os.PathLike[str]) -> list[int]:
    """Drop the `live*` gauge files of processes that no longer exist; returns their pids."""
    dead: set[int] = set()
    for f in Path(path).iterdir():
        m = _LIVE_GAUGE_FILE.match(f.name)
        if m:
            pid = int(m.group(1))
            if pid != os.getpid() and not _pid_alive(pid):
                dead.add(pid)
    for pid in sorted(dead):
        mark_process_dead(pid, str(path))
    return sorted(dead)


def metrics_response(
    registry: CollectorRegistry | None,
    accept: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[bytes, str]:
    """The body and content type of `GET /metrics`.

    With `PROMETHEUS_MULTIPROC_DIR` set: every worker's values merged (the given registry is not used, since
    in this mode it would only hold this worker's own). Else: the given registry. `accept` is the request's
    Accept header (OpenMetrics when the scraper asks for it, else the Prometheus text format 0.0.4).
    """
    path = multiprocess_dir(env)
    if path is not None:
        mark_dead_workers(path)
        source = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(source, path=path)
    elif registry is not None:
        source = registry
    else:
        raise ValueError("no registry given and PROMETHEUS_MULTIPROC_DIR is not set")
    encoder, content_type = choose_encoder(accept or "")
    return encoder(source), content_type
