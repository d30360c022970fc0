"""The litellm adapter against a real loopback server speaking Anthropic's Messages API, and its lazy import."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any, Iterator

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config.schema import ProviderConfig
from gateway.domain import Deployment
from gateway.metering import usage_from_payload
from gateway.providers.base import UpstreamFailure
from gateway.providers.litellm_adapter import LitellmProvider

SEEN: list[dict[str, Any]] = []


def _anthropic_stream(model: str) -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_2", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "hello "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "stream"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events)


async def messages(request: Request) -> Response:
    body = await request.json()
    SEEN.append({"body": body, "api_key": request.headers.get("x-api-key")})
    if body.get("stream"):
        return Response(_anthropic_stream(body["model"]), media_type="text/event-stream")
    if body["messages"][0]["content"] in ("fail", [{"type": "text", "text": "fail"}]):
        return JSONResponse({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                            status_code=529)
    return JSONResponse({
        "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": "hello from claude"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 4},
    })


@pytest.fixture(scope="module")
def anthropic_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def _provider(url: str) -> tuple[LitellmProvider, Deployment]:
    cfg = ProviderConfig(api_base=url, api_key="sk-ant-operator", api_style="litellm", litellm_provider="anthropic",
                         timeout_s=10)
    d = Deployment("anthropic", "claude-haiku", "claude-3-haiku-20240307", 200_000, 4096, 80, frozenset())
    return LitellmProvider("anthropic", cfg), d


async def test_litellm_provider_translates_openai_body_and_returns_openai_json_with_usage(anthropic_url):
    provider, d = _provider(anthropic_url)
    result = await provider.complete(d, {"model": "claude-haiku", "max_tokens": 20,
                                          "messages": [{"role": "user", "content": "hi"}]})
    assert result.obj["choices"][0]["message"]["content"] == "hello from claude"
    usage = usage_from_payload(orjson.loads(result.body))
    assert usage is not None and usage.input_tokens == 11 and usage.output_tokens == 4
    assert SEEN[-1]["body"]["model"] == "claude-3-haiku-20240307"
    assert SEEN[-1]["api_key"] == "sk-ant-operator"


async def test_litellm_provider_maps_vendor_overload_to_a_retryable_failure(anthropic_url):
    provider, d = _provider(anthropic_url)
    with pytest.raises(UpstreamFailure) as info:
        await provider.complete(d, {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "fail"}]})
    assert info.value.status is not None and info.value.status >= 500


async def test_litellm_stream_comes_back_as_openai_chunks_with_usage(anthropic_url):
    from gateway.metering import StreamMeter

    provider, d = _provider(anthropic_url)
    events = await provider.stream(d, {"model": "claude-haiku", "max_tokens": 20, "stream": True,
                                        "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "hi"}]})
    meter = StreamMeter(client_wants_usage=True)
    payloads = [p async for batch in events for p in batch]
    await events.aclose()
    for p in payloads:
        meter.feed(p)
    assert payloads[-1] == b"[DONE]"
    assert meter.output_text() == "hello stream"
    assert meter.usage is not None and meter.usage.input_tokens == 11 and meter.usage.output_tokens == 4


def test_openai_compatible_path_never_imports_litellm():
    code = (
        "import sys, asyncio\n"
        "from gateway.config.load import load_config\n"
        "from gateway.app import create_app\n"
        "from gateway.providers.registry import build_providers\n"
        "import gateway.cli, gateway.pipeline\n"
        "build_providers(load_config('config/demo.yaml', env={}))\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__('pathlib').Path(__file__).parents[2]))
