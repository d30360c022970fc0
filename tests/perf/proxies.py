"""The proxies `make bench` compares, and the request body it sends them.

- the bare pass-through proxy (`tests/perf/bare_proxy.py`): the floor, on the gateway's own server stack;
- the gateway: `gateway serve --config config/demo.yaml`, every DEMO_<PROVIDER>_URL at the stand-in, model `auto`
  (routing over the eight seed deployments), the ledger at a temporary SQLite file;
- the LiteLLM proxy, from its own venv under .bench/ (installed on first use), one model at the stand-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson

from tests.perf.harness import PY, ROOT, Proxy, log
from tests.perf.standin import free_port

LITELLM_VENV = ROOT / ".bench" / "litellm-venv"
LITELLM_SPEC = "litellm[proxy]==1.106.2"
PROVIDERS = ("volcengine", "dashscope", "qianfan", "zhipu", "deepseek", "hunyuan")
BEARER = "sk-bench-5f0c2a9e71d84b36a1c4e0f9b27d6e83"  # sent by wrk/post.lua and ttfb.py; the gateway ignores it (require_api_key: false)


# ---------------------------------------------------------------------------------------------------- bodies

def chat_body(model: str, stream: bool) -> bytes:
    """A realistic ~1 KB chat request: a system prompt and a short conversation."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an operations team. Answer in plain "
                                          "English, cite the relevant runbook section when one applies, and say "
                                          "so when you are not sure rather than guessing."},
            {"role": "user", "content": "Our nightly export job failed twice this week with a timeout while "
                                        "writing to object storage. The job writes about 40 GB in 2,000 files, "
                                        "and the storage bucket is in another region."},
            {"role": "assistant", "content": "Cross-region writes of that size are often limited by per-request "
                                             "latency rather than bandwidth. How many files does the job upload "
                                             "in parallel, and what timeout does the client use?"},
            {"role": "user", "content": "It uploads 4 files at a time with a 60 second timeout per request. "
                                        "Should we raise the timeout, raise the parallelism, or move the "
                                        "bucket? Give me the trade-offs in a short list. Request @N@."},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "bench-user-0001",
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


# ------------------------------------------------------------------------------------------------ the proxies

def gateway_cmd(port: int, patches: str | None = None) -> list[str]:
    exe = Path(PY).parent / "gateway"
    head = [str(exe)] if exe.exists() else [PY, "-m", "gateway.cli"]
    if patches is not None:
        head = [PY, "-m", "tests.perf.proposals.serve_patched", patches]
    return [*head, "serve", "--config", str(ROOT / "config" / "demo.yaml"), "--host", "127.0.0.1", "--port", str(port)]


def gateway_env(standin_port: int, stream: bool, ledger_db: Path) -> dict[str, str]:
    prefix = "sse/" if stream else ""
    env = {**os.environ, "GATEWAY_LEDGER_URL": f"sqlite:///{ledger_db}"}
    for p in PROVIDERS:
        env[f"DEMO_{p.upper()}_URL"] = f"http://127.0.0.1:{standin_port}/{prefix}{p}/v1"
    return env


def gateway_proxy(standin_port: int, stream: bool, work: Path, patches: str | None = None) -> Proxy:
    port = free_port()
    name = "gateway" if patches is None else f"gateway+{patches or 'none'}"
    # Each variant its own ledger file: gateways running side by side must not share SQLite's write lock.
    db = work / ("ledger.db" if patches is None else f"ledger-{patches or 'none'}-{port}.db")
    return Proxy(name, gateway_cmd(port, patches), gateway_env(standin_port, stream, db), port, "/healthz",
                 work / "gateway.log")


def bare_proxy(standin_port: int, stream: bool, work: Path, client: str | None = None) -> Proxy:
    port = free_port()
    upstream = f"http://127.0.0.1:{standin_port}/{'sse/' if stream else ''}bare/v1"
    cmd = [PY, "-m", "tests.perf.bare_proxy", "--port", str(port), "--upstream", upstream]
    if client:
        cmd += ["--client", client]
    return Proxy(f"bare[{client}]" if client else "bare", cmd, dict(os.environ), port, "/healthz",
                 work / "bare.log")


def litellm_available(notes: list[str], allow_install: bool) -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    if not allow_install:
        notes.append("LiteLLM proxy skipped (--no-litellm)")
        return None
    log(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (at most 4 minutes)")
    try:
        subprocess.run([shutil.which("python3") or PY, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=60,
                       capture_output=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_SPEC], check=True,
                       timeout=240, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        notes.append(f"LiteLLM proxy skipped: `pip install '{LITELLM_SPEC}'` did not finish ({type(e).__name__})")
        return None
    return exe if exe.exists() else None


def litellm_proxy(exe: Path, standin_port: int, stream: bool, work: Path) -> Proxy:
    port = free_port()
    cfg = work / f"litellm-{'sse' if stream else 'json'}.yaml"
    prefix = "sse/" if stream else ""
    cfg.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: http://127.0.0.1:{standin_port}/{prefix}litellm/v1\n"
        "      api_key: sk-bench-upstream\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {BEARER}\n"  # the bearer token wrk and the ttfb client send
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True"}
    env.pop("DATABASE_URL", None)
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return Proxy("litellm", cmd, env, port, "/health/liveliness", work / "litellm.log", start_timeout=120)
