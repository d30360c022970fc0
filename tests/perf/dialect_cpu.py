"""CPU per request of each client dialect x vendor style, in process (issue 13's performance targets, measured).

    .venv/bin/python -m tests.perf.dialect_cpu [--requests 2000] [--rounds 5]
    .venv/bin/python -m tests.perf.dialect_cpu --pieces     (the dialect-specific work alone, pure CPU)

The gateway app runs in this process, driven by raw ASGI calls one request at a time (no HTTP client on the
gateway's side to pay for); the vendor is a fixed-bytes asyncio server in another process (its CPU is not
counted), answering chat completions on `.../chat/completions` and Messages on `.../v1/messages` (`/sse/...`:
streams). Figures are the process's user CPU (and user + system: the kernel's loopback TCP work is billed to the
sender, and it swings with the machine's load) per request, best round of several (the machine is shared).
Scenarios:
    chat -> openai          the chat-completions baseline
    messages -> anthropic   a Messages request passed through (target: <= 1.1x chat)
    messages -> openai      a Messages request translated both ways (target: <= 1.3x chat)
    chat -> anthropic       a chat request to an Anthropic-format vendor (translated on the vendor side)
    responses -> openai     a Responses request translated both ways (target: <= 1.3x chat)
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from tests.perf import standin
from tests.perf.standin import _response, chat_completion_body, free_port, sse_body, wait_http

_TEXT = orjson.loads(chat_completion_body())["choices"][0]["message"]["content"]
PROMPT = "Summarise the gateway's routing rule in two sentences, for a finance reader."


def message_body() -> bytes:
    return orjson.dumps({"id": "msg_bench0001", "type": "message", "role": "assistant", "model": "bench-model",
                         "content": [{"type": "text", "text": _TEXT}], "stop_reason": "end_turn",
                         "stop_sequence": None, "usage": {"input_tokens": 231, "output_tokens": 76}})


def message_sse(chunks: int = 20) -> bytes:
    words = _TEXT.split(" ")
    start = {"id": "msg_bench0001", "type": "message", "role": "assistant", "model": "bench-model", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 231, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start},
                                    {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}]
    for i in range(chunks):
        events.append({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": words[i % len(words)] + " "}})
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks}},
               {"type": "message_stop"}]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


class _Vendor(standin._Vendor):
    ANSWERS = {
        (False, "chat"): _response(chat_completion_body(), b"application/json"),
        (True, "chat"): _response(sse_body(), b"text/event-stream"),
        (False, "messages"): _response(message_body(), b"application/json"),
        (True, "messages"): _response(message_sse(), b"text/event-stream"),
    }

    def answer(self, path: str) -> bytes:
        kind = "chat" if path.endswith("/chat/completions") else "messages" if path.endswith("/v1/messages") else ""
        return self.ANSWERS.get((path.startswith("/sse/"), kind), self.OK)


def _config(port: int, stream: bool, ledger: Path) -> Any:
    from gateway.config.load import load_config_data

    sse = "/sse" if stream else ""
    price = {"currency": "CNY", "per": "1K", "input": "0.001", "output": "0.002"}
    data = {
        "gateway": {"ledger_url": f"sqlite:///{ledger}", "admin_key": "bench-admin"},
        "providers": {
            "oai": {"api_base": f"http://127.0.0.1:{port}{sse}/oai/v1", "api_key": "k1"},
            "ant": {"api_base": f"http://127.0.0.1:{port}{sse}/ant", "api_key": "k2", "api_style": "anthropic"},
        },
        "deployments": [
            {"provider": "oai", "model": "to-openai", "upstream_model": "bench-model", "context_window": 32000,
             "max_output_tokens": 4096, "quality": 80, "price": price},
            {"provider": "ant", "model": "to-anthropic", "upstream_model": "bench-model", "context_window": 32000,
             "max_output_tokens": 4096, "quality": 80, "price": price},
        ],
    }
    return load_config_data(data, "bench", env={})


def _request(api: str, model: str, stream: bool) -> tuple[str, bytes]:
    if api == "chat":
        body: dict[str, Any] = {"model": model, "max_tokens": 100, "stream": stream,
                                "messages": [{"role": "system", "content": "You are terse."},
                                             {"role": "user", "content": PROMPT}]}
        return "/v1/chat/completions", orjson.dumps(body)
    if api == "responses":
        body = {"model": model, "max_output_tokens": 100, "stream": stream, "instructions": "You are terse.",
                "input": PROMPT}
        return "/v1/responses", orjson.dumps(body)
    body = {"model": model, "max_tokens": 100, "stream": stream, "system": "You are terse.",
            "messages": [{"role": "user", "content": PROMPT}]}
    return "/v1/messages", orjson.dumps(body)


async def _call(app: Any, path: str, body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


SCENARIOS = [("chat", "to-openai"), ("messages", "to-anthropic"), ("messages", "to-openai"), ("chat", "to-anthropic"),
             ("responses", "to-openai")]


async def _bench(port: int, stream: bool, requests: int, rounds: int) -> dict[str, tuple[float, float]]:
    from gateway.app import create_app

    ledger = Path(tempfile.mkdtemp(prefix="gw-dialect-cpu-")) / "ledger.db"
    app = create_app(_config(port, stream, ledger))
    out: dict[str, tuple[float, float]] = {}
    async with app.router.lifespan_context(app):
        for api, model in SCENARIOS:
            path, body = _request(api, model, stream)
            for _ in range(200):  # warm: connections, caches
                assert await _call(app, path, body) == 200
        best = {s: (float("inf"), float("inf")) for s in SCENARIOS}
        for r in range(rounds):  # interleaved and rotated, so load elsewhere (and the ledger writer's work left
            # over from the scenario before) falls on every scenario alike
            for api, model in SCENARIOS[r % len(SCENARIOS):] + SCENARIOS[: r % len(SCENARIOS)]:
                path, body = _request(api, model, stream)
                u0 = resource.getrusage(resource.RUSAGE_SELF)
                for _ in range(requests):
                    await _call(app, path, body)
                u1 = resource.getrusage(resource.RUSAGE_SELF)
                user = (u1.ru_utime - u0.ru_utime) / requests
                total = user + (u1.ru_stime - u0.ru_stime) / requests
                b = best[(api, model)]
                best[(api, model)] = (min(b[0], user), min(b[1], total))
        await asyncio.sleep(0.5)  # let the ledger writer drain before the app stops
    for (api, model), (user, total) in best.items():
        out[f"{api} -> {model.removeprefix('to-')}"] = (user * 1e6, total * 1e6)
    return out


def pieces(repeat: int = 2000) -> dict[str, float]:
    """The dialect-specific work alone, in us per request (pure CPU, no I/O): parsing the request, and relaying
    one 20-chunk stream (what differs between the scenarios; the rest of the path is shared)."""
    from starlette.datastructures import Headers

    from gateway.dialects import DIALECTS
    from gateway.dialects.anthropic_stream import ChunksFromEvents, MessagesEncoder, NativeStream
    from gateway.dialects.base import EncodedStream
    from gateway.dialects.chat import ChatStream
    from gateway.dialects.responses import to_chat
    from gateway.dialects.responses_stream import ResponsesEncoder
    from gateway.providers.sse import SSESplitter
    from gateway.tokens import TokenCounter

    counter, headers = TokenCounter(), Headers(raw=[(b"content-type", b"application/json")])
    chat_events = SSESplitter().feed(sse_body())
    anthropic_events = SSESplitter().feed(message_sse())
    echo = to_chat({"model": "to-openai", "input": PROMPT}).echo

    def timed(fn: Any) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(repeat):
                fn()
            best = min(best, (time.process_time() - t0) / repeat)
        return best * 1e6

    out = {}
    for api, model in (("chat", "to-openai"), ("messages", "to-anthropic"), ("responses", "to-openai")):
        _, body = _request(api, model, False)
        dialect = DIALECTS[api]
        out[f"parse {api}"] = timed(lambda: dialect.parse(body, headers, counter, 256))
    out["stream chat -> openai (ChatStream)"] = timed(lambda: ChatStream(True).relay(chat_events))
    out["stream messages -> anthropic (NativeStream)"] = timed(lambda: NativeStream().relay(anthropic_events))
    out["stream messages -> openai (MessagesEncoder)"] = timed(
        lambda: EncodedStream(MessagesEncoder()).relay(chat_events))
    out["stream responses -> openai (ResponsesEncoder)"] = timed(
        lambda: EncodedStream(ResponsesEncoder(echo, "resp_" + "0" * 48, "bench-model")).relay(chat_events))
    out["stream chat -> anthropic (ChunksFromEvents + ChatStream)"] = timed(
        lambda: ChatStream(True).relay(ChunksFromEvents().feed_batch(anthropic_events)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vendor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pieces", action="store_true", help="only the dialect-specific work, pure CPU")
    args = parser.parse_args()
    if args.pieces:
        for name, us in pieces().items():
            print(f"  {name:58s} {us:7.1f} us")
        return
    if args.vendor:
        standin._serve(args.vendor, _Vendor)
        return
    port = free_port()
    vendor = subprocess.Popen([sys.executable, "-m", "tests.perf.dialect_cpu", "--vendor", str(port)],
                              cwd=Path(__file__).resolve().parents[2])
    try:
        wait_http(port, path="/healthz", proc=vendor)
        for stream in (False, True):
            figures = asyncio.run(_bench(port, stream, args.requests, args.rounds))
            base_user, base_total = figures["chat -> openai"]
            print(f"{'streamed' if stream else 'non-streamed'} ({args.requests} requests x {args.rounds} rounds, "
                  "best round; CPU us per request in the gateway process, user and user+system):")
            for name, (user, total) in figures.items():
                print(f"  {name:24s} user {user:7.1f} us {user / base_user:5.2f}x   "
                      f"user+sys {total:7.1f} us {total / base_total:5.2f}x")
    finally:
        vendor.send_signal(signal.SIGTERM)
        vendor.wait(10)


if __name__ == "__main__":
    main()
