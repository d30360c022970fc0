"""`gateway demo`: simulated vendors on loopback, the gateway in front of them, and (with --once) sample traffic.

The gateway runs on the embedded defaults of `config/demo.yaml`: a SQLite ledger, no Redis.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import uvicorn

from gateway.accounting import utc_now
from gateway.config.load import load_config
from gateway.ledger import reports
from gateway.ledger.queries import fetch_partials
from gateway.demo.vendors import DEFAULT_DEMO_CONFIG, VendorCluster, env_for
from gateway.server import uvicorn_config

LONG_PROMPT_WORDS = 200_000  # only qwen-long (10M context) can take it


@dataclass(frozen=True)
class Sample:
    title: str
    body: dict[str, Any]
    path: str = "/v1/chat/completions"
    fail_first: str | None = None  # make this provider fail once, to show fallback


def _chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


SAMPLES = [
    Sample("short prompt, route auto (quality >= 70)", _chat("auto", "用一句话总结2024年5月的大模型价格战。")),
    Sample("long prompt (20K tokens), short answer", _chat("auto", "report " * 20_000, max_tokens=50)),
    Sample("premium route (quality >= 85)", _chat("premium", "Draft a careful reply to a customer.", max_tokens=400)),
    Sample("200K-token prompt: only qwen-long fits", _chat("auto", "word " * LONG_PROMPT_WORDS, max_tokens=100)),
    Sample("free model hit (route cheap)", _chat("cheap", "Translate 'good morning' to Chinese.")),
    Sample("fallback: deepseek fails once, premium moves on", _chat("premium", "hello", max_tokens=50),
           fail_first="deepseek"),
    Sample("streaming with usage", _chat("auto", "Stream me a haiku.", stream=True,
                                         stream_options={"include_usage": True})),
    Sample("embedding", {"model": "embed", "input": ["价格战", "price war"]}, path="/v1/embeddings"),
]


async def send_samples(base_url: str, cluster: VendorCluster) -> list[dict[str, str]]:
    results = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for sample in SAMPLES:
            if sample.fail_first:
                cluster.control(sample.fail_first, "error_500", count=1)
            resp = await client.post(sample.path, json=sample.body)
            await resp.aread()
            h = resp.headers
            results.append({
                "title": sample.title, "status": str(resp.status_code), "route": sample.body["model"],
                "provider": h.get("x-gateway-provider", "-"), "model": h.get("x-gateway-model", "-"),
                "attempts": h.get("x-gateway-attempts", "-"), "input": h.get("x-gateway-input-tokens", "-"),
                "output": h.get("x-gateway-output-tokens", "-"), "cost": h.get("x-gateway-cost", "(streamed)"),
                "currency": h.get("x-gateway-currency", ""),
            })
    return results


def print_results(results: list[dict[str, str]]) -> None:
    print(f"\n{'request':<50}{'status':>6}  {'deployment':<40}{'tries':>5}{'in':>8}{'out':>6}  cost")
    total = Decimal(0)
    for r in results:
        deployment = f"{r['provider']}/{r['model']}"
        print(f"{r['title']:<50}{r['status']:>6}  {deployment:<40}{r['attempts']:>5}{r['input']:>8}{r['output']:>6}"
              f"  {r['cost']} {r['currency']}")
        if r["cost"] not in ("(streamed)", ""):
            total += Decimal(r["cost"])
    print(f"{'total of non-streamed requests':<50}{'':>6}  {'':<40}{'':>5}{'':>8}{'':>6}  {total} CNY")


async def ledger_report(services: Any, since: datetime) -> str:
    """The finance report over what the samples wrote to the ledger, per provider and model."""
    window = reports.make_window(since.isoformat(), (utc_now() + timedelta(seconds=1)).isoformat())
    groups = ("provider", "model")
    partials = await fetch_partials(services.engine, window, groups)
    report = reports.build_report(partials, window, groups, services.config.gateway.reporting_currency, None)
    return "\nCost report from the ledger (gateway report --group-by provider,model):\n" + reports.to_table(report)


def print_try(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    print(f"""
Gateway demo on {base} (simulated vendors on loopback; SQLite ledger; no Redis)

Try:
  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "auto", "messages": [{{"role": "user", "content": "hello"}}]}}' -D - | grep -i x-gateway
  curl -s {base}/v1/models
  curl -s {base}/admin/route/explain -H 'authorization: Bearer demo-admin-key' \\
       -d '{{"model": "premium", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 500}}'
  curl -s {base}/metrics | grep gateway_cost_total
  python: OpenAI(base_url="{base}/v1", api_key="x").chat.completions.create(model="auto", messages=[...])
Ctrl-C stops it.
""", flush=True)


async def run_demo(port: int = 8080, once: bool = False) -> int:
    cluster = VendorCluster()
    await cluster.start()
    try:
        config = load_config(DEFAULT_DEMO_CONFIG, env={**os.environ, **env_for(cluster)})
        server = uvicorn.Server(uvicorn_config(config, "127.0.0.1", 0 if once else port,
                                               log_level="warning" if once else "info"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                await serving  # surfaces the start-up error (e.g. port in use)
                return 1
            await asyncio.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1]
        if not once:
            print_try(bound)
            await serving
            return 0
        began = utc_now()
        print_results(await send_samples(f"http://127.0.0.1:{bound}", cluster))
        await asyncio.sleep(0.2)  # streamed rows are completed by their pump, just after the last byte
        app: Any = server.config.app
        print(await ledger_report(app.state.services, began))
        server.should_exit = True
        await serving
        return 0
    finally:
        await cluster.stop()
