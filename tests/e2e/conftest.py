"""End-to-end harness: the simulated vendors and a real gateway server on loopback, the real OpenAI SDK as client."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from contextlib import closing
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


def demo_config(vendors: VendorCluster, edit: Callable[[dict[str, Any]], None] | None = None,
                ledger_url: str | None = None) -> Any:
    """config/demo.yaml pointed at the running vendors, with a fresh SQLite ledger (or the given one)."""
    data = parse_yaml_text(DEMO.read_text())
    if edit is not None:
        edit(data)
    if ledger_url is None:
        ledger_url = f"sqlite:///{tempfile.mkdtemp(prefix='gw-e2e-')}/ledger.db"
    return load_config_data(data, "e2e", env={**env_for(vendors), "GATEWAY_LEDGER_URL": ledger_url})


def ledger_rows(gateway: GatewayThread, wait_for: int = 0, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The gateway's ledger rows (read with sqlite3), once at least `wait_for` of them are no longer in flight."""
    path = gateway.services.config.gateway.ledger_url.removeprefix("sqlite:///")
    deadline = time.monotonic() + timeout_s
    while True:
        with closing(sqlite3.connect(path)) as conn:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]
        if len([r for r in rows if r["status"] != "in_flight"]) >= wait_for or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


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
