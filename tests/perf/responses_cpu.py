"""CPU per request of POST /v1/responses (translated) against the same request as a chat completion, in process.

The real pipeline (parse, route, books, ledger, render / stream relay) through `Pipeline.handle`, each response
driven to its end through a no-op ASGI `send`; the vendor is an in-process stand-in answering canned bytes (the
standin's chat completion; a stream of one batch per chunk, as LLM vendors stream), so the figures are the
gateway's CPU alone. The ledger is the in-memory one (its cost is the same for both APIs). Rounds of each kind
are interleaved and the best round of each is kept (the machine is shared).

    .venv/bin/python -m tests.perf.responses_cpu [--requests 200] [--rounds 25]

Issue 13's target: a Responses request costs at most 1.3x the CPU of a chat completion.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
from starlette.datastructures import Headers

from gateway.app import build_services, stop_services
from gateway.config.load import load_config_data, parse_yaml_text
from gateway.domain import Deployment
from gateway.ledger.base import MemoryLedger
from gateway.pipeline import Pipeline
from gateway.providers.base import JSONResult
from gateway.server import tune_gc
from tests.perf.standin import chat_completion_body, sse_body

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a helpful assistant for a cost-routing gateway. Answer briefly."
QUESTION = "Which deployment is cheapest for a 300-token prompt, and why does the ledger match the invoice?"
TOOL = {"name": "get_price", "description": "Price of a deployment",
        "parameters": {"type": "object", "properties": {"model": {"type": "string"}}, "required": ["model"]}}


def bodies(stream: bool, agent: bool) -> tuple[bytes, bytes]:
    """(chat body, Responses body) asking the same thing."""
    chat: dict[str, Any] = {"model": "deepseek-v2", "max_tokens": 200,
                            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]}
    resp: dict[str, Any] = {"model": "deepseek-v2", "max_output_tokens": 200, "instructions": SYSTEM,
                            "input": QUESTION}
    if agent:  # an agent's second turn: tools, its call and the call's result
        chat["tools"] = [{"type": "function", "function": TOOL}]
        chat["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_price", "arguments": "{\"model\":\"x\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "0.001 CNY per 1K tokens"}]
        resp["tools"] = [{"type": "function", **TOOL}]
        resp["input"] = [{"role": "user", "content": QUESTION},
                         {"type": "function_call", "call_id": "call_1", "name": "get_price",
                          "arguments": "{\"model\":\"x\"}"},
                         {"type": "function_call_output", "call_id": "call_1", "output": "0.001 CNY per 1K tokens"}]
        resp["include"], resp["store"] = [], False  # what the Agents SDK sends
    if stream:
        chat["stream"] = resp["stream"] = True
    return orjson.dumps(chat), orjson.dumps(resp)


class CannedVendor:
    """A provider answering canned bytes, parsed as the real adapter parses them."""

    def __init__(self) -> None:
        self.body = chat_completion_body()
        self.events = [line[6:] for line in sse_body(20).split(b"\n\n") if line.startswith(b"data: ")]

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return JSONResult(self.body, orjson.loads(self.body))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> Any:
        return _Events(self.events)

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class _Events:
    def __init__(self, events: list[bytes]) -> None:
        self.events = events

    async def __aiter__(self) -> AsyncIterator[list[bytes]]:
        for e in self.events:
            yield [e]

    async def aclose(self) -> None:
        return None


async def _drive(pipeline: Pipeline, api: str, raw: bytes, headers: Headers) -> int:
    response = await pipeline.handle(api, raw, headers)
    sent = 0

    async def send(message: Any) -> None:
        nonlocal sent
        sent += len(message.get("body", b""))

    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def receive() -> Any:
        return await never

    await response({"type": "http", "method": "POST", "path": "/"}, receive, send)
    assert response.status_code == 200, response.status_code
    return sent


async def measure(requests: int, rounds: int) -> list[dict[str, Any]]:
    data = parse_yaml_text((ROOT / "config" / "demo.yaml").read_text())
    tmp = tempfile.mkdtemp(prefix="gw-perf-")
    config = load_config_data(data, "perf", env={"GATEWAY_LEDGER_URL": f"sqlite:///{tmp}/ledger.db"})
    vendor = CannedVendor()
    services = await build_services(config, ledger=MemoryLedger(), providers={p: vendor for p in config.providers})
    pipeline = Pipeline(services)
    tune_gc()  # as `gateway serve` does once started
    headers = Headers(raw=[(b"content-type", b"application/json")])
    results = []
    try:
        for stream in (False, True):
            for agent in (False, True):
                chat_raw, resp_raw = bodies(stream, agent)
                best = {"chat": float("inf"), "responses": float("inf")}
                for api, raw in (("chat", chat_raw), ("responses", resp_raw)):  # warm up
                    for _ in range(50):
                        await _drive(pipeline, api, raw, headers)
                for _ in range(rounds):
                    for api, raw in (("chat", chat_raw), ("responses", resp_raw)):
                        t0 = time.process_time()
                        for _ in range(requests):
                            await _drive(pipeline, api, raw, headers)
                        best[api] = min(best[api], (time.process_time() - t0) / requests)
                results.append({"stream": stream, "agent_turn": agent, "chat_us": best["chat"] * 1e6,
                                "responses_us": best["responses"] * 1e6, "ratio": best["responses"] / best["chat"]})
    finally:
        await stop_services(services)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per round")
    ap.add_argument("--rounds", type=int, default=25, help="rounds of each kind, interleaved; the best is kept")
    args = ap.parse_args()
    rows = asyncio.run(measure(args.requests, args.rounds))
    print(f"{'request':<28}{'chat us':>10}{'responses us':>14}{'ratio':>8}")
    for r in rows:
        name = ("stream" if r["stream"] else "non-stream") + (", agent turn (tools)" if r["agent_turn"] else ", simple")
        print(f"{name:<28}{r['chat_us']:>10.1f}{r['responses_us']:>14.1f}{r['ratio']:>8.3f}")


if __name__ == "__main__":
    main()
