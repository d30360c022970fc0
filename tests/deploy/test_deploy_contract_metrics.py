"""gateway/metrics.py defines exactly the metrics of contract section 6, which the deploy kit relies on."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from tests.deploy.contract import CONTRACT_METRICS


def _defined() -> dict[str, tuple[str, tuple[str, ...]]]:
    metrics = Metrics(CollectorRegistry())
    found = {}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if name is None:
            continue
        kind = value._type
        # prometheus-client strips `_total` from a counter's name; PromQL selects it with the suffix.
        queried = f"{name}_total" if kind == "counter" else name
        found[queried] = (kind, tuple(value._labelnames))
    return found


def test_metrics_module_defines_exactly_the_contract_metrics_with_their_labels() -> None:
    assert _defined() == CONTRACT_METRICS
