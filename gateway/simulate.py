"""`gateway simulate`: what cache-aware routing saves, measured on the simulated vendors' real prompt caches.

Replays fixed transcripts (multi-turn chat conversations and agent loops with a long system prompt, tool
definitions and growing tool results; the vendors' answers are ignored, so every policy sends the same prompts)
through an in-process gateway in front of the demo vendors (loopback HTTP; DeepSeek and DashScope cache prompt
prefixes and report the hits), under three policies:

- `list-price`: every provider `cache: {mode: none}`: ranking by list prices (the vendors still cache; hits are
  billed when they happen by luck);
- `cache-aware`: the default (contract 4): expected cached tokens priced at cached_input;
- `fixed`: every request names one deployment (deepseek-v2).

and three scenarios: distinct prices (the 2024 list prices), two providers at the same price, and a price cut at
the cold provider halfway through (`PUT /admin/prices`). Costs and cached tokens are read from each run's own
ledger (exact decimals); requests are interleaved turn by turn across the workloads.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

Messages = list[dict[str, Any]]
ADMIN_KEY = "sim-admin-key"
_WORDS = ("order refund parcel invoice warehouse courier address account payment delivery customer status "
          "tracking return exchange discount coupon product review message agent schedule").split()

# Per 1M tokens, CNY: DeepSeek-V2 (cache hits at 0.1 from Aug 2024), Qwen-Long (implicit cache hits at 40 %),
# Doubao-pro-32k (no prompt cache in 2024).
DEEPSEEK = {"input": "1", "output": "2", "cached_input": "0.1"}
QWEN = {"input": "0.5", "output": "2", "cached_input": "0.2"}
DOUBAO = {"input": "0.8", "output": "2"}


@dataclass(frozen=True)
class Scenario:
    name: str
    prices: dict[str, dict[str, str]]  # provider -> price fields
    providers: tuple[str, ...]
    cut: dict[str, str] | None = None  # provider and new price fields, applied halfway through


SCENARIOS = (
    Scenario("distinct prices", {"deepseek": DEEPSEEK, "dashscope": QWEN, "volcengine": DOUBAO},
             ("deepseek", "dashscope", "volcengine")),
    Scenario("same price at two providers", {"deepseek": DEEPSEEK, "dashscope": DEEPSEEK},
             ("deepseek", "dashscope")),
    Scenario("price cut at the cold provider",
             {"deepseek": DEEPSEEK, "dashscope": {"input": "1.5", "output": "2", "cached_input": "0.6"}},
             ("deepseek", "dashscope"), cut={"provider": "dashscope", "input": "0.8", "cached_input": "0.32"}),
)
POLICIES = ("list-price", "cache-aware", "fixed")
MODELS = {"deepseek": ("deepseek-v2", "deepseek-chat"), "dashscope": ("qwen-long", "qwen-long"),
          "volcengine": ("doubao-pro-32k", "ep-20240515-doubao-pro-32k")}
# The demo vendors' caches (gateway/demo/dialects.py): the gateway is configured with the same TTL and minimum.
CACHES = {"deepseek": {"ttl_s": 3600, "min_tokens": 64}, "dashscope": {"ttl_s": 600, "min_tokens": 256}}


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)) + "."


def chat_transcript(seed: int, turns: int, system: str) -> list[Messages]:
    """The requests of one conversation: the whole history and the next question, turn after turn."""
    rng = random.Random(seed)
    history: Messages = [{"role": "system", "content": system}]
    out = []
    for i in range(turns):
        history.append({"role": "user", "content": f"Question {i}: " + _text(rng, 40)})
        out.append([dict(m) for m in history])
        history.append({"role": "assistant", "content": _text(rng, 150)})
    return out


TOOLS = [{"type": "function", "function": {
    "name": name, "description": f"{name.replace('_', ' ')}: " + "Looks up the shop's records and returns them. " * 8,
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                   "required": ["query"]}}}
    for name in ("search_orders", "get_invoice", "track_parcel", "list_returns", "read_policy", "send_message")]


def agent_transcript(seed: int, steps: int, system: str) -> list[Messages]:
    """An agent loop: a task, then per step the model's tool call and a tool result that grows each step."""
    rng = random.Random(seed)
    history: Messages = [{"role": "system", "content": system},
                         {"role": "user", "content": "Task: " + _text(rng, 60)}]
    out = [[dict(m) for m in history]]
    for i in range(steps - 1):
        call = {"id": f"call_{seed}_{i}", "type": "function",
                "function": {"name": TOOLS[i % len(TOOLS)]["function"]["name"],  # type: ignore[index]
                             "arguments": f'{{"query": "{rng.choice(_WORDS)}", "limit": {10 + i}}}'}}
        history.append({"role": "assistant", "content": None, "tool_calls": [call]})
        history.append({"role": "tool", "tool_call_id": call["id"], "content": _text(rng, 120 + 60 * i)})
        out.append([dict(m) for m in history])
    return out


@dataclass
class Result:
    scenario: str
    policy: str
    requests: int = 0
    total_cost: Decimal = Decimal(0)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    moves: int = 0
    providers: dict[str, int] = field(default_factory=dict)

    @property
    def cached_share(self) -> Decimal:
        return Decimal(self.cached_tokens) / Decimal(self.prompt_tokens) if self.prompt_tokens else Decimal(0)


def gateway_config(scenario: Scenario, policy: str, urls: dict[str, str], ledger_url: str) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    deployments = []
    for name in scenario.providers:
        cache = {"mode": "none"} if policy == "list-price" else CACHES.get(name)
        providers[name] = {"api_base": urls[name], "api_key": f"demo-{name}-key", "timeout_s": 10,
                           **({"cache": cache} if cache else {})}
        model, upstream = MODELS[name]
        deployments.append({"provider": name, "model": model, "upstream_model": upstream, "context_window": "32K",
                            "max_output_tokens": 4096, "quality": 80, "capabilities": ["tools", "json_mode"],
                            "price": {"currency": "CNY", "per": "1M", **scenario.prices[name]}})
    return {"gateway": {"reporting_currency": "CNY", "ledger_url": ledger_url, "admin_key": ADMIN_KEY},
            "providers": providers, "deployments": deployments, "routes": {"sim": {}}}


def ledger_totals(path: str, result: Result, skip: int = 0) -> None:
    """Exact totals from the run's ledger (after its first `skip` rows): cost in the reporting currency, prompt
    and cached tokens."""
    with closing(sqlite3.connect(path)) as conn:
        for cost, inp, cached, write in conn.execute(
                "SELECT total_cost_reporting, input_tokens, cached_input_tokens, cache_write_tokens "
                "FROM ledger WHERE status = 'success' ORDER BY id LIMIT -1 OFFSET ?", (skip,)):
            result.total_cost += Decimal(cost)
            result.prompt_tokens += inp + cached + write
            result.cached_tokens += cached
            result.requests += 1


async def run_one(scenario: Scenario, policy: str, cluster: Any, workloads: list[list[Messages]],
                  workdir: Path) -> Result:
    import httpx

    from gateway.app import create_app
    from gateway.config.load import load_config_data

    cluster.reset()  # every vendor's cache and counters cleared: each run starts cold
    db = workdir / f"{scenario.name.replace(' ', '-')}-{policy}.db"
    cfg = load_config_data(gateway_config(scenario, policy, cluster.urls, f"sqlite:///{db}"), "simulate", env={})
    app = create_app(cfg)
    result = Result(scenario.name, policy)
    model = "deepseek-v2" if policy == "fixed" else "sim"
    last: dict[int, str] = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                     timeout=30) as client:
            # Every deployment answers once first, so each has a recent latency (as in a gateway that has been
            # serving): between equal prices, that is what a cache-blind ranking goes by.
            for name in scenario.providers:
                r = await client.post("/v1/chat/completions", json={
                    "model": MODELS[name][0], "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]})
                r.raise_for_status()
            skip = len(scenario.providers)
            steps = max(len(w) for w in workloads)
            for t in range(steps):
                if scenario.cut is not None and t == steps // 2:
                    cut = dict(scenario.cut)
                    entry = {"provider": cut.pop("provider"), "model": MODELS[scenario.cut["provider"]][0], **cut}
                    r = await client.put("/admin/prices", json={"prices": [entry]},
                                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
                    r.raise_for_status()
                for w, requests in enumerate(workloads):
                    if t >= len(requests):
                        continue
                    body: dict[str, Any] = {"model": model, "messages": requests[t], "max_tokens": 64}
                    if any(m.get("tool_calls") or m.get("role") == "tool" for m in requests[t]):
                        body["tools"] = TOOLS
                    r = await client.post("/v1/chat/completions", json=body)
                    if r.status_code != 200:
                        raise RuntimeError(f"{scenario.name}/{policy}: {r.status_code} {r.text[:300]}")
                    provider = r.headers["x-gateway-provider"]
                    result.providers[provider] = result.providers.get(provider, 0) + 1
                    if w in last and last[w] != provider:
                        result.moves += 1
                    last[w] = provider
    ledger_totals(str(db), result, skip)
    return result


def workloads(turns: int) -> list[list[Messages]]:
    chat_system = "You are the shop's support assistant. " + _text(random.Random(1), 700)
    agent_system = "You are the shop's operations agent; use the tools. " + _text(random.Random(2), 900)
    return ([chat_transcript(10 + i, turns, chat_system) for i in range(3)]
            + [agent_transcript(20 + i, turns, agent_system) for i in range(2)])


async def simulate(turns: int = 8, scenarios: tuple[Scenario, ...] = SCENARIOS,
                   policies: tuple[str, ...] = POLICIES, progress: Callable[[str], None] | None = None,
                   ) -> list[Result]:
    from gateway.demo.vendors import VendorCluster

    work = workloads(turns)
    results = []
    with tempfile.TemporaryDirectory(prefix="gw-simulate-") as tmp:
        async with VendorCluster() as cluster:
            for scenario in scenarios:
                for policy in policies:
                    res = await run_one(scenario, policy, cluster, work, Path(tmp))
                    if progress is not None:
                        progress(f"{scenario.name} / {policy}: {res.total_cost} CNY")
                    results.append(res)
    return results


def render(results: list[Result], turns: int) -> str:
    """A Markdown table (the README's), one row per scenario and policy."""
    lines = [f"{len(workloads(turns))} workloads (3 chat conversations, 2 agent loops) x {turns} turns, "
             "interleaved; costs from each run's ledger (CNY, exact).", "",
             "| scenario | policy | requests | total cost (CNY) | vs list-price | input from cache | moves | served by |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    base = {r.scenario: r.total_cost for r in results if r.policy == "list-price"}
    for r in results:
        ref = base.get(r.scenario)
        rel = f"{(r.total_cost / ref - 1) * 100:+.1f} %" if ref else "n/a"
        served = ", ".join(f"{p} {n}" for p, n in sorted(r.providers.items()))
        cost = format(r.total_cost.normalize(), "f")
        lines.append(f"| {r.scenario} | {r.policy} | {r.requests} | {cost} | {rel} | "
                     f"{r.cached_share * 100:.1f} % | {r.moves} | {served} |")
    return "\n".join(lines)


def main(turns: int = 8) -> int:
    results = asyncio.run(simulate(turns))
    print(render(results, turns))
    return 0
