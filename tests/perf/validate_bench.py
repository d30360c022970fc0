"""CPU of the hostile-input checks (gateway/http/validate.py) per chat request, measured in process.

    .venv/bin/python -m tests.perf.validate_bench [--rounds 7] [--requests 2000]

Prints (1) the check alone on the `make bench` chat body (non-streamed and streamed), (2) `parse_chat` with and
without it, (3) the header limits (`gateway.app.headers_refusal`) on the headers the OpenAI SDK sends, and (4) the whole request pipeline run in process (`Pipeline.chat`, SQLite ledger, a stand-in provider
that answers at once), with and without the check, interleaved round by round so the machine's load falls on both
alike. CPU time (`time.process_time`), best round of each.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any, Callable

import orjson
from starlette.datastructures import Headers

from gateway.http import parse as parse_module
from gateway.http.validate import check_chat
from gateway.providers.base import JSONResult
from gateway.tokens import TokenCounter
from tests.perf.proxies import chat_body

NO_HEADERS = Headers({})


def best_us(fn: Callable[[], Any], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


class _Answer:
    """A provider answering every chat at once with a fixed completion (no network: the gateway's CPU alone)."""

    def __init__(self) -> None:
        self.body = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}})

    async def complete(self, deployment: Any, body: dict[str, Any]) -> JSONResult:
        return JSONResult(self.body, orjson.loads(self.body))

    async def aclose(self) -> None:
        pass


async def pipeline_us(requests: int, rounds: int) -> tuple[float, float]:
    from gateway.app import build_services, stop_services
    from gateway.pipeline import Pipeline
    from tests.faults.conftest import faults_config

    config = faults_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    services = await build_services(config, providers={"flaky": _Answer(), "steady": _Answer()})  # type: ignore[dict-item]
    pipeline = Pipeline(services)
    raws = [chat_body("loop-1", False).replace(b"@N@", str(i).encode()) for i in range(requests)]
    real = parse_module.check_chat
    results: dict[bool, float] = {True: float("inf"), False: float("inf")}
    try:
        for raw in raws[:200]:  # warm: tokenizer caches, prepared routing, metric children
            await pipeline.handle("chat", raw, NO_HEADERS)
        for _ in range(rounds):
            for checked in (True, False):
                parse_module.check_chat = real if checked else (lambda body, raw: None)  # type: ignore[assignment]
                t0 = time.process_time()
                for raw in raws:
                    response = await pipeline.handle("chat", raw, NO_HEADERS)
                    assert response.status_code == 200
                results[checked] = min(results[checked], (time.process_time() - t0) / requests * 1e6)
    finally:
        parse_module.check_chat = real
        await stop_services(services)
    return results[True], results[False]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    counter = TokenCounter()
    for stream in (False, True):
        raw = chat_body("auto", stream)
        body = orjson.loads(raw)
        alone = best_us(lambda: check_chat(body, raw), 20_000, args.rounds)
        with_check = best_us(lambda: parse_module.parse_chat(raw, NO_HEADERS, counter, 256), 5_000, args.rounds)
        real = parse_module.check_chat
        parse_module.check_chat = lambda body, raw: None  # type: ignore[assignment]
        try:
            without = best_us(lambda: parse_module.parse_chat(raw, NO_HEADERS, counter, 256), 5_000, args.rounds)
        finally:
            parse_module.check_chat = real
        print(f"{'stream' if stream else 'non-stream'} body ({len(raw)} bytes): check_chat {alone:.2f} us; "
              f"parse_chat {with_check:.2f} us with it, {without:.2f} us without")
    from gateway.app import headers_refusal

    headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"OpenAI/Python 2.54.0"), (b"accept", b"application/json"),
               (b"content-type", b"application/json"), (b"authorization", b"Bearer sk-" + b"x" * 48),
               (b"content-length", b"949"), (b"x-stainless-lang", b"python"), (b"x-stainless-os", b"Linux"),
               (b"x-stainless-retry-count", b"0"), (b"accept-encoding", b"gzip, deflate")]
    print(f"header limits (10 headers an SDK sends): {best_us(lambda: headers_refusal(headers), 50_000, args.rounds):.2f} us")
    checked, unchecked = asyncio.run(pipeline_us(args.requests, args.rounds))
    print(f"Pipeline.chat in process (SQLite ledger, instant provider): {checked:.1f} us CPU per request with the "
          f"checks, {unchecked:.1f} us without: {checked / unchecked:.3f}x")


if __name__ == "__main__":
    main()
