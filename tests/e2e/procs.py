"""Running real `gateway serve` processes for multi-replica and crash tests, and fresh databases for them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import httpx
import yaml

from gateway.config.load import parse_yaml_text

REPO = Path(__file__).resolve().parents[2]
GATEWAY_BIN = str(Path(sys.executable).with_name("gateway"))
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plain(value: Any) -> Any:
    """Decimals from the YAML loader back to YAML numbers, for writing a config file."""
    from decimal import Decimal

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)  # as text: the schema reads prices from strings exactly
    return value


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(_plain(data), sort_keys=False))
    return path


def demo_data() -> dict[str, Any]:
    data: dict[str, Any] = parse_yaml_text((REPO / "config" / "demo.yaml").read_text())
    return data


class ServeProcess:
    """`gateway serve --config F --port P` as a child process; output goes to a log file the test can grep."""

    def __init__(self, config_path: Path, env: Mapping[str, str], log_path: Path, *, workers: int = 1,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        args = [GATEWAY_BIN, "serve", "--config", str(config_path), "--port", str(self.port)]
        if workers > 1:
            args += ["--workers", str(workers)]
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(config_path.parent), start_new_session=True)

    def wait_ready(self, timeout_s: float = 30.0) -> ServeProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready in {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


@contextmanager
def serve(config_path: Path, env: Mapping[str, str], log_path: Path, **kwargs: Any) -> Iterator[ServeProcess]:
    proc = ServeProcess(config_path, env, log_path, **kwargs)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new PostgreSQL database for one test (dropped afterwards); yields its URL."""
    import asyncio

    import asyncpg

    name = f"gw_e2e_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def redis_prefix() -> str:
    return f"gw-e2e-{uuid.uuid4().hex[:8]}:"


def clear_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
