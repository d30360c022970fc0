"""A real Prometheus for tests: started on a free loopback port, scraping the targets you name.

    with running_prometheus("http://127.0.0.1:8000/metrics") as prom:
        prom.wait_for_scrapes(2)
        result = prom.query('sum by (team) (gateway_cost_total)')

`find_binary("prometheus")` / `find_binary("promtool")` return None when the Debian package `prometheus` is not
installed (tests skip with that reason); `$PROMETHEUS_BIN` / `$PROMTOOL_BIN` override the lookup.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

_ENV_OVERRIDE = {"prometheus": "PROMETHEUS_BIN", "promtool": "PROMTOOL_BIN"}
MISSING_REASON = "{name} not installed (Debian package `prometheus`: apt-get install -y prometheus)"


class PrometheusError(RuntimeError):
    pass


def find_binary(name: str) -> str | None:
    override = os.environ.get(_ENV_OVERRIDE.get(name, ""), "")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, timeout: float = 5.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback test helper
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error body
        body = e.read()
        e.close()
        try:
            return json.loads(body)
        except ValueError:
            raise PrometheusError(f"{url}: HTTP {e.code}: {body[:200]!r}") from None


def instant_query(base_url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """`GET /api/v1/query`: the result as a list of {"metric": {...}, "value": [ts, "v"]}.

    A scalar or string result comes back as one element with empty labels. Raises PrometheusError on a
    query Prometheus refuses.
    """
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = _get_json(f"{base_url}/api/v1/query?{urllib.parse.urlencode(params)}")
    if body.get("status") != "success":
        raise PrometheusError(f"query {expr!r} failed: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def scrape_config(targets: Sequence[str], scrape_interval: str = "1s", job: str = "gateway",
                  rule_files: Sequence[str] = ()) -> dict[str, Any]:
    """A Prometheus config with one job scraping `targets` (full URLs sharing scheme and path)."""
    parsed = [urllib.parse.urlsplit(t) for t in targets]
    schemes = {p.scheme for p in parsed}
    paths = {p.path or "/metrics" for p in parsed}
    if len(schemes) != 1 or len(paths) != 1:
        raise ValueError(f"targets must share scheme and path: {list(targets)}")
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval},
        "rule_files": list(rule_files),
        "scrape_configs": [{
            "job_name": job,
            "scheme": schemes.pop(),
            "metrics_path": paths.pop(),
            "static_configs": [{"targets": [p.netloc for p in parsed]}],
        }],
    }


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        return instant_query(self.url, expr, at)

    def targets(self) -> list[dict[str, Any]]:
        return list(_get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (alerting and recording), with its health."""
        groups = _get_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        return [rule for g in groups for rule in g["rules"]]

    def wait_for(self, expr: str, timeout: float = 20.0, interval: float = 0.2) -> list[dict[str, Any]]:
        """Poll until `expr` returns at least one sample; its result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"no data for {expr!r} after {timeout}s; targets: {self.targets()}\n"
                                      f"{self.log()}")
            time.sleep(interval)

    def wait_for_scrapes(self, count: int = 2, timeout: float = 20.0) -> None:
        """Wait until every target has been scraped successfully at least `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if targets:
                ok = self.query("sum by (instance) (sum_over_time(up[1h]))")
                done = {r["metric"].get("instance") for r in ok if float(r["value"][1]) >= count}
                if len(done) == len(targets) and all(t["health"] == "up" for t in targets):
                    return
            if time.monotonic() > deadline:
                raise PrometheusError(f"targets not scraped {count} times in {timeout}s: {targets}\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running_prometheus(
    targets: str | Sequence[str],
    scrape_interval: str = "1s",
    job: str = "gateway",
    rule_files: Sequence[str | os.PathLike[str]] = (),
    binary: str | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[Prometheus]:
    """Start Prometheus on 127.0.0.1:<free port> scraping `targets`; stopped and cleaned up on exit."""
    binary = binary or find_binary("prometheus")
    if binary is None:
        raise FileNotFoundError(MISSING_REASON.format(name="prometheus"))
    target_list = [targets] if isinstance(targets, str) else list(targets)
    with tempfile.TemporaryDirectory(prefix="gateway-prometheus-") as tmp:
        workdir = Path(tmp)
        rules = []
        for i, f in enumerate(rule_files):
            dest = workdir / f"rules_{i}_{Path(f).name}"
            shutil.copyfile(f, dest)
            rules.append(dest.name)
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(target_list, scrape_interval, job, rules)))
        last_error = ""
        for _attempt in range(3):  # another process may take the free port before Prometheus binds it
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            )
            try:
                if _wait_ready(url, process, startup_timeout):
                    try:
                        yield Prometheus(url=url, process=process, workdir=workdir)
                    finally:
                        _stop(process)
                    return
                last_error = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
            finally:
                _stop(process)
                log.close()
        raise PrometheusError(f"Prometheus did not start: {last_error}")
