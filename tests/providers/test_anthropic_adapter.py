"""The `api_style: anthropic` adapter at the HTTP level (respx): what goes up, what comes back, how errors map."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import respx

from gateway.config.schema import ProviderConfig
from gateway.decisions.fallback import classify_status
from gateway.domain import Deployment
from gateway.metering import usage_from_payload
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import UpstreamFailure
from gateway.domain import Usage

BASE = "https://vendor.test/anthropic"
DEPLOYMENT = Deployment("ds", "deepseek-v3", "deepseek-chat", 65536, 8000, 88, frozenset({"tools"}))
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "deepseek-chat",
           "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 11, "output_tokens": 4, "cache_read_input_tokens": 64,
                     "cache_creation_input_tokens": 5}}


def provider(router: respx.MockRouter) -> AnthropicProvider:
    cfg = ProviderConfig(api_base=BASE, api_key="sk-vendor", api_style="anthropic")
    return AnthropicProvider("ds", cfg, transport=httpx.MockTransport(router.handler))


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


async def test_complete_posts_messages_with_vendor_key_and_version_and_reads_usage_exactly() -> None:
    router = respx.MockRouter(assert_all_called=True)
    route = router.post(f"{BASE}/v1/messages").respond(200, json=MESSAGE)
    p = provider(router)
    body = {"model": "deepseek-chat", "messages": [{"role": "system", "content": "sys"},
                                                   {"role": "user", "content": "hi"}]}
    result = await p.complete(DEPLOYMENT, body)
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == "sk-vendor" and sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert orjson.loads(sent.content) == {"model": "deepseek-chat", "max_tokens": 8000, "system": "sys",
                                          "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert result.obj["choices"][0]["message"]["content"] == "hello"
    assert orjson.loads(result.body) == result.obj
    assert usage_from_payload(result.obj) == Usage(11, 64, 4, cache_write_tokens=5)
    await p.aclose()


async def test_stream_translates_vendor_events_to_chat_chunks_with_final_usage() -> None:
    events = [{"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
                                                    "usage": {"input_tokens": 11, "output_tokens": 1}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
              {"type": "message_stop"}]
    router = respx.MockRouter()
    route = router.post(f"{BASE}/v1/messages").respond(200, content=sse(events),
                                                       headers={"content-type": "text/event-stream"})
    p = provider(router)
    stream = await p.stream(DEPLOYMENT, {"model": "deepseek-chat", "stream": True,
                                         "stream_options": {"include_usage": True},
                                         "messages": [{"role": "user", "content": "hi"}]})
    payloads = [payload async for batch in stream for payload in batch]
    await stream.aclose()
    assert orjson.loads(route.calls.last.request.content)["stream"] is True
    assert payloads[-1] == b"[DONE]"
    assert usage_from_payload(orjson.loads(payloads[-2])) == Usage(11, 0, 4)
    assert "".join(orjson.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads[:-2]
                   if orjson.loads(p)["choices"]) == "hi"
    await p.aclose()


@pytest.mark.parametrize("status,kind,retry", [(529, "http_5xx", True), (500, "http_5xx", True),
                                               (429, "rate_limited", True), (401, "account", True),
                                               (403, "account", True), (400, "http_4xx", False)])
async def test_vendor_errors_map_as_for_openai_style(status: int, kind: str, retry: bool) -> None:
    router = respx.MockRouter()
    router.post(f"{BASE}/v1/messages").respond(status, json={"type": "error", "error": {
        "type": "overloaded_error", "message": "vendor says no"}})
    p = provider(router)
    with pytest.raises(UpstreamFailure) as info:
        await p.complete(DEPLOYMENT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    verdict = classify_status(info.value.status or 0)
    assert (info.value.status, verdict.kind, verdict.retry) == (status, kind, retry)
    assert info.value.message == "vendor says no"
    with pytest.raises(UpstreamFailure) as info:
        await p.stream(DEPLOYMENT, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert info.value.status == status
    await p.aclose()


async def test_untranslatable_request_is_a_400_for_the_client_and_nothing_is_sent() -> None:
    router = respx.MockRouter()
    route = router.post(f"{BASE}/v1/messages").respond(200, json=MESSAGE)
    p = provider(router)
    with pytest.raises(UpstreamFailure) as info:
        await p.complete(DEPLOYMENT, {"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert (info.value.status, info.value.param, info.value.code) == (400, "n", "untranslatable_request")
    assert not classify_status(400).retry
    assert not route.called
    await p.aclose()


async def test_native_calls_send_the_body_unchanged_and_return_the_vendor_bytes() -> None:
    raw = orjson.dumps(MESSAGE) + b"\n"
    router = respx.MockRouter()
    route = router.post(f"{BASE}/v1/messages").respond(200, content=raw, headers={"content-type": "application/json"})
    p = provider(router)
    body = {"model": "deepseek-chat", "max_tokens": 10, "top_k": 3, "thinking": {"type": "enabled",
                                                                                 "budget_tokens": 5},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                       "cache_control": {"type": "ephemeral"}}]}]}
    result = await p.complete_native(DEPLOYMENT, body)
    assert orjson.loads(route.calls.last.request.content) == body
    assert result.body == raw
    events = [{"type": "message_start", "message": MESSAGE}, {"type": "message_stop"}]
    router.post(f"{BASE}/v1/messages").respond(200, content=sse(events), headers={"content-type": "text/event-stream"})
    stream = await p.stream_native(DEPLOYMENT, {**body, "stream": True})
    payloads = [payload async for batch in stream for payload in batch]
    await stream.aclose()
    assert payloads == [orjson.dumps(e) for e in events]
    await p.aclose()


async def test_vendor_error_event_mid_stream_raises_upstream_failure() -> None:
    events = [{"type": "message_start", "message": MESSAGE},
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    router = respx.MockRouter()
    router.post(f"{BASE}/v1/messages").respond(200, content=sse(events), headers={"content-type": "text/event-stream"})
    p = provider(router)
    stream = await p.stream(DEPLOYMENT, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(UpstreamFailure) as info:
        async for _ in stream:
            pass
    assert info.value.kind == "http_5xx"
    await stream.aclose()
    await p.aclose()
