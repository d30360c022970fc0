"""End-to-end harness: the simulated vendors and a real gateway server on loopback, the real OpenAI SDK as client."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import uvicorn

from gateway.config.load import load_config_data, parse_yaml_text
from gateway.demo.vendors import VendorCluster, VendorClusterThread, env_for
from gateway.server import uvicorn_config

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


class GatewayThread:
    """A real `gateway serve` (uvicorn) on a free loopback port, in a thread with its own event loop."""

    def __init__(self, config: Any, **overrides: Any) -> None:
        cfg = uvicorn_config(config, "127.0.0.1", 0, log_level="warning")
        if overrides:
            from gateway.app import create_app

            cfg.app = create_app(config, **overrides)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.app = cfg.app

    def __enter__(self) -> GatewayThread:
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("gateway failed to start")
            threading.Event().wait(0.025)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def services(self) -> Any:
        return self.app.state.services

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def demo_config(vendors: VendorCluster, edit: Callable[[dict[str, Any]], None] | None = None) -> Any:
    data = parse_yaml_text(DEMO.read_text())
    if edit is not None:
        edit(data)
    return load_config_data(data, "e2e", env={**env_for(vendors), "GATEWAY_LEDGER_URL": "sqlite:///:memory:"})


@pytest.fixture(scope="session")
def vendors() -> Iterator[VendorCluster]:
    with VendorClusterThread() as cluster:
        yield cluster


@pytest.fixture()
def fresh_vendors(vendors: VendorCluster) -> VendorCluster:
    vendors.reset()
    return vendors


@pytest.fixture()
def gateway(fresh_vendors: VendorCluster) -> Iterator[GatewayThread]:
    with GatewayThread(demo_config(fresh_vendors)) as gw:
        yield gw


@pytest.fixture()
def client(gateway: GatewayThread) -> Any:
    import openai

    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client-own-openai-key", max_retries=0)
