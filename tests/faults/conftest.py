"""A gateway in front of two providers serving the same model: `flaky` (cheaper, so tried first) reached through
a fault-injecting proxy, `steady` reached directly; both are the same loopback vendor with fixed usage."""

from __future__ import annotations

import tempfile
from typing import Any, Iterator

import pytest

from gateway.config.load import load_config_data
from tests.e2e.conftest import GatewayThread
from tests.faults.proxy import FaultProxy
from tests.faults.vendor import LoopbackVendor

MODEL = "loop-1"
TIMEOUT_S = 1.0


def faults_config(flaky_url: str, steady_url: str, *, edit: Any = None) -> Any:
    data: dict[str, Any] = {
        "gateway": {"reporting_currency": "CNY", "admin_key": "admin-secret",
                    "ledger_url": f"sqlite:///{tempfile.mkdtemp(prefix='gw-faults-')}/ledger.db",
                    "cooldown_after_failures": 100, "max_attempts": 2},
        "providers": {"flaky": {"api_base": flaky_url, "api_key": "vendor-key-flaky", "timeout_s": TIMEOUT_S},
                      "steady": {"api_base": steady_url, "api_key": "vendor-key-steady", "timeout_s": 10}},
        "deployments": [
            {"provider": "flaky", "model": MODEL, "context_window": 32000, "quality": 80,
             "price": {"currency": "CNY", "per": "1K", "input": "0.001", "output": "0.002"}},
            {"provider": "steady", "model": MODEL, "context_window": 32000, "quality": 80,
             "price": {"currency": "CNY", "per": "1K", "input": "0.002", "output": "0.004"}},
        ],
    }
    if edit is not None:
        edit(data)
    return load_config_data(data, "faults", env={})


@pytest.fixture(scope="module")
def vendor() -> Iterator[LoopbackVendor]:
    with LoopbackVendor() as v:
        yield v


@pytest.fixture()
def proxy(vendor: LoopbackVendor) -> Iterator[FaultProxy]:
    with FaultProxy(vendor.port) as p:
        yield p


@pytest.fixture()
def gateway(vendor: LoopbackVendor, proxy: FaultProxy) -> Iterator[GatewayThread]:
    config = faults_config(f"http://127.0.0.1:{proxy.port}/v1", vendor.url)
    with GatewayThread(config) as gw:
        yield gw
