"""`gateway demo`: simulated vendors on loopback, the gateway in front of them, and (with --once) sample traffic.

The gateway runs on the embedded defaults of `config/demo.yaml`: a SQLite ledger, no Redis.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

import httpx
import orjson
import uvicorn

from gateway.accounting import utc_now
from gateway.config.load import load_config
from gateway.ledger import reports
from gateway.ledger.queries import GROUP_BY_CHOICES, fetch_partials
from gateway.demo.vendors import DEFAULT_DEMO_CONFIG, VendorCluster, env_for
from gateway.server import uvicorn_config

LONG_PROMPT_WORDS = 200_000  # only qwen-long (10M context) can take it


@dataclass(frozen=True)
class Sample:
    title: str
    body: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]  # or built from the previous answer
    path: str = "/v1/chat/completions"
    fail_first: str | None = None  # make this provider fail once, to show fallback


def _chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


# A long system prompt makes the conversation's prefix worth caching (DeepSeek caches 64-token blocks).
SYSTEM = ("You are the finance team's assistant during the May 2024 price war. Quote prices in CNY per 1K "
          "tokens, name the vendor and the date of each cut, and say when a price is free. ") * 8
HISTORY = [{"role": "system", "content": SYSTEM},
           {"role": "user", "content": "Who cut prices first in May 2024?"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
TOOL_ASK = [{"role": "user", "content": "What is the weather in Hangzhou?"}]
INVOICE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["vendor", "model", "price_per_1k"],
                  "properties": {"vendor": {"type": "string"}, "model": {"type": "string"},
                                 "price_per_1k": {"type": "number", "minimum": 0}}}
MESSAGES_SYSTEM = [{"type": "text", "text": SYSTEM * 3, "cache_control": {"type": "ephemeral"}}]


def _tool_result(previous: dict[str, Any]) -> dict[str, Any]:
    """Turn 2 of the tool round trip: the assistant's call and the tool's result appended."""
    message = previous["choices"][0]["message"]
    call = message["tool_calls"][0]
    return {"model": "auto", "tools": [WEATHER_TOOL],
            "messages": TOOL_ASK + [message, {"role": "tool", "tool_call_id": call["id"],
                                              "content": '{"city": "Hangzhou", "temperature_c": 24, "sky": "clear"}'}]}


def _messages(text: str) -> dict[str, Any]:
    return {"model": "deepseek-v2-anthropic", "max_tokens": 200, "system": MESSAGES_SYSTEM,
            "messages": [{"role": "user", "content": text}]}


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
    Sample("conversation turn 1 (cold cache)", {"model": "deepseek-v2", "messages": HISTORY}),
    Sample("conversation turn 2 (prefix cached: warm)", {"model": "deepseek-v2", "messages": HISTORY + [
        {"role": "assistant", "content": "DeepSeek, on 6 May 2024."},
        {"role": "user", "content": "And who followed?"}]}),
    Sample("tool call: auto, tools offered", {"model": "auto", "messages": TOOL_ASK, "tools": [WEATHER_TOOL]}),
    Sample("tool result back: the answer uses it", _tool_result),
    Sample("JSON schema output", _chat("auto", "The cheapest model of May 2024 as JSON", response_format={
        "type": "json_schema", "json_schema": {"name": "price", "schema": INVOICE_SCHEMA, "strict": True}})),
    Sample("embedding", {"model": "embed", "input": ["价格战", "price war"]}, path="/v1/embeddings"),
    Sample("Responses API (/v1/responses)", {"model": "auto", "input": "One line on the price war.",
                                             "max_output_tokens": 64}, path="/v1/responses"),
    Sample("Messages API, cache_control (writes cache)", _messages("Who cut prices first?"), path="/v1/messages"),
    Sample("Messages API again (reads cache)", _messages("And who followed?"), path="/v1/messages"),
]


def _cached(answer: dict[str, Any]) -> str:
    """Cached prompt tokens as the answer's own API reports them ('+N written' for a cache write)."""
    found = answer.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    for details in ("prompt_tokens_details", "input_tokens_details"):
        if isinstance(usage.get(details), dict) and "cached_tokens" in usage[details]:
            return str(usage[details]["cached_tokens"])
    if "cache_read_input_tokens" in usage:
        written = usage.get("cache_creation_input_tokens") or 0
        return f"{usage['cache_read_input_tokens']}" + (f" +{written}w" if written else "")
    if "prompt_cache_hit_tokens" in usage:
        return str(usage["prompt_cache_hit_tokens"])
    return "-"


def _summary(answer: dict[str, Any], status: int) -> str:
    """What came back, in a few words: a tool call, JSON, text, or why not."""
    if status == 404:
        return "endpoint not in this build"
    if status >= 400:
        return str((answer.get("error") or {}).get("message", ""))[:40]
    if answer.get("type") == "message":  # Anthropic Messages
        kinds = [b.get("name", "") if b.get("type") == "tool_use" else "text" for b in answer.get("content", [])]
        return f"{answer.get('stop_reason')}: {', '.join(kinds)}"
    if answer.get("object") == "response":  # OpenAI Responses: the text of its output items
        texts = [str(part.get("text", "")) for item in answer.get("output", []) if isinstance(item, dict)
                 for part in item.get("content") or [] if isinstance(part, dict)]
        calls = [str(item.get("name")) for item in answer.get("output", []) if item.get("type") == "function_call"]
        return f"{answer.get('status')}: {', '.join(calls) or ''.join(texts)[:34]}"
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") or {}
    if message.get("tool_calls"):
        fn = message["tool_calls"][0]["function"]
        return f"tool_calls: {fn['name']}({fn['arguments']})"[:48]
    content = str(message.get("content") or "")
    return f"{choices[0].get('finish_reason')}: {content[:34]}" if choices[0] else "-"


async def send_samples(base_url: str, cluster: VendorCluster) -> list[dict[str, str]]:
    results = []
    previous: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for sample in SAMPLES:
            if sample.fail_first:
                cluster.control(sample.fail_first, "error_500", count=1)
            body = sample.body(previous) if callable(sample.body) else sample.body
            resp = await client.post(sample.path, json=body)
            raw = await resp.aread()
            answer: dict[str, Any] = {}
            if not body.get("stream"):
                try:
                    loaded = orjson.loads(raw)
                    answer = loaded if isinstance(loaded, dict) else {}
                except orjson.JSONDecodeError:
                    pass
            previous = answer
            h = resp.headers
            results.append({
                "title": sample.title, "status": str(resp.status_code), "route": str(body.get("model")),
                "provider": h.get("x-gateway-provider", "-"), "model": h.get("x-gateway-model", "-"),
                "attempts": h.get("x-gateway-attempts", "-"), "input": h.get("x-gateway-input-tokens", "-"),
                "cached": _cached(answer), "expected": h.get("x-gateway-expected-cached-tokens", "-"),
                "output": h.get("x-gateway-output-tokens", "-"),
                "cost": h.get("x-gateway-cost", "(streamed)" if body.get("stream") else "-"),
                "currency": h.get("x-gateway-currency", ""), "answer": _summary(answer, resp.status_code),
            })
    return results


# The sample table: (key, heading, width, alignment); columns are separated by two spaces.
COLUMNS = (("title", "request", 48, "<"), ("status", "status", 6, ">"), ("deployment", "deployment", 40, "<"),
           ("attempts", "tries", 5, ">"), ("input", "in", 6, ">"), ("cached", "cached", 11, ">"),
           ("expected", "predicted", 9, ">"),
           ("output", "out", 4, ">"), ("cost", "cost", 16, "<"), ("answer", "answer", 0, "<"))


def format_row(values: dict[str, str]) -> str:
    return "  ".join(f"{values.get(key, ''):{align}{width}}" for key, _, width, align in COLUMNS).rstrip()


def parse_row(line: str) -> dict[str, str]:
    """A table line back into its columns (the inverse of `format_row`, for tests and scripts)."""
    out, at = {}, 0
    for key, _, width, _ in COLUMNS:
        out[key] = (line[at : at + width] if width else line[at:]).strip()
        at += width + 2
    return out


def print_results(results: list[dict[str, str]]) -> None:
    print("\n" + format_row({key: heading for key, heading, _, _ in COLUMNS}))
    total = Decimal(0)
    for r in results:
        cost = f"{r['cost']} {r['currency']}".strip()
        print(format_row({**r, "deployment": f"{r['provider']}/{r['model']}", "cost": cost}))
        if r["cost"] not in ("(streamed)", "-", ""):
            total += Decimal(r["cost"])
    print(format_row({"title": "total of non-streamed requests", "cost": f"{total} CNY"}))
    print("(in = prompt tokens not from cache; cached = served from the vendor's prompt cache, +Nw = written to it;\n"
          " predicted = the cached tokens the gateway expected when it ranked the deployments)")


async def ledger_report(services: Any, since: datetime) -> str:
    """The finance report over what the samples wrote to the ledger, per provider and model."""
    window = reports.make_window(since.isoformat(), (utc_now() + timedelta(seconds=1)).isoformat())
    # By inbound API too once the ledger records it (chat, responses, messages, embeddings).
    groups = ("api", "provider", "model") if "api" in GROUP_BY_CHOICES else ("provider", "model")
    partials = await fetch_partials(services.engine, window, groups)
    report = reports.build_report(partials, window, groups, services.config.gateway.reporting_currency, None)
    return (f"\nCost report from the ledger (gateway report --group-by {','.join(groups)}):\n"
            + reports.to_table(report))


def print_try(port: int, cache_url: str = "http://127.0.0.1:<vendor port>/_cache") -> None:
    base = f"http://127.0.0.1:{port}"
    print(f"""
Gateway demo on {base} (simulated vendors on loopback; SQLite ledger; no Redis)

Try:
  # chat completions, routed to the cheapest good-enough deployment (see the x-gateway-* headers)
  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "auto", "messages": [{{"role": "user", "content": "hello"}}]}}' -D - | grep -i x-gateway
  # a tool call: offer a tool and ask for it (the simulated model calls a tool the last user message names,
  # or when it says use / call / tool / weather / search / lookup; tool_choice "required" forces one)
  curl -s {base}/v1/chat/completions -H 'content-type: application/json' -d '{{"model": "auto",
       "messages": [{{"role": "user", "content": "What is the weather in Hangzhou?"}}],
       "tools": [{{"type": "function", "function": {{"name": "get_weather", "parameters": {{"type": "object",
         "required": ["city"], "properties": {{"city": {{"type": "string"}}}}}}}}}}]}}'
  # Anthropic Messages API, routed natively to DeepSeek's Anthropic-format endpoint
  curl -s {base}/v1/messages -H 'content-type: application/json' -H 'x-api-key: any' -d '{{
       "model": "deepseek-v2-anthropic", "max_tokens": 200, "messages": [{{"role": "user", "content": "hi"}}]}}'
  # OpenAI Responses API
  curl -s {base}/v1/responses -H 'content-type: application/json' \\
       -d '{{"model": "auto", "input": "One line on the price war."}}'
  curl -s {base}/v1/models
  curl -s {base}/admin/route/explain -H 'authorization: Bearer demo-admin-key' \\
       -d '{{"model": "premium", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 500}}'
  curl -s {base}/metrics | grep gateway_cost_total
  python: OpenAI(base_url="{base}/v1", api_key="x").chat.completions.create(model="auto", messages=[...])
          Anthropic(base_url="{base}", api_key="x").messages.create(model="deepseek-v2-anthropic", ...)
  Claude Code: ANTHROPIC_BASE_URL={base} ANTHROPIC_AUTH_TOKEN=x ANTHROPIC_MODEL=deepseek-v2-anthropic claude
  A conversation resending its history gets cached tokens on turn 2 (DeepSeek caches 64-token blocks; see
  x-gateway-cached-input-tokens); DeepSeek's cache: curl {cache_url} (POST {{"clear": true}} empties it).
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
            deepseek = cluster.ports.get("deepseek")
            print_try(bound, *([f"http://127.0.0.1:{deepseek}/_cache"] if deepseek else []))
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
