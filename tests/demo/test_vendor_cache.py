"""Prompt caching over real HTTP: turn 2 of a conversation is warm, TTL and minimum hold, streams report it too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.demo import textsim
from gateway.demo.dialects import OPENAI
from gateway.demo.prompt_cache import CachePolicy
from gateway.demo.vendor_app import ModelSpec, VendorSpec
from gateway.demo.vendors import VendorCluster, VendorClusterThread

SYSTEM = "You are a meticulous analyst of LLM price wars. " * 40  # ~500 tokens: several blocks
MODEL = {"deepseek": "deepseek-chat", "dashscope": "qwen-long", "volcengine": "ep-20240515-doubao-pro-32k"}


def conversation(turns: int, system: str = SYSTEM) -> list[dict[str, Any]]:
    """`turns` user turns, each answered but the last, as a client resends its growing history."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: which vendor cut prices first?"})
        if i < turns - 1:
            messages.append({"role": "assistant", "content": f"Answer {i}: DeepSeek, on 6 May 2024."})
    return messages


def post(v: Any, provider: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": MODEL[provider], "messages": messages, **extra}
    r = v.client.post(f"{v.cluster.urls[provider]}/chat/completions", json=body, headers=v.auth(provider))
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def vendor_prompt_tokens(messages: list[dict[str, Any]], **body: Any) -> int:
    pieces, extra = textsim.prompt_pieces(messages, body.get("tools"), body.get("response_format"))
    return len(pieces) + extra


def test_deepseek_conversation_stays_warm_on_turn_two_with_hit_and_miss_summing_to_prompt_tokens(v):
    turn1, turn2 = conversation(1), conversation(2)
    first = post(v, "deepseek", turn1)
    assert first["prompt_tokens"] == vendor_prompt_tokens(turn1)
    assert (first["prompt_cache_hit_tokens"], first["prompt_cache_miss_tokens"]) == (0, first["prompt_tokens"])
    second = post(v, "deepseek", turn2)
    assert second["prompt_tokens"] == vendor_prompt_tokens(turn2)
    # Turn 1's prompt minus its final reply marker is shared, in whole 64-token blocks.
    assert second["prompt_cache_hit_tokens"] == (first["prompt_tokens"] - 1) // 64 * 64
    assert second["prompt_cache_hit_tokens"] + second["prompt_cache_miss_tokens"] == second["prompt_tokens"]


def test_dashscope_reports_cached_tokens_in_prompt_tokens_details(v):
    post(v, "dashscope", conversation(1))
    usage = post(v, "dashscope", conversation(2))
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 256
    assert usage["prompt_tokens_details"]["cached_tokens"] % 64 == 0


def test_nothing_is_cached_below_the_vendors_minimum(v):
    short = conversation(1, system="Be brief.")  # well under DashScope's 256
    assert vendor_prompt_tokens(short) < 256
    post(v, "dashscope", short)
    assert post(v, "dashscope", short)["prompt_tokens_details"]["cached_tokens"] == 0


def test_volcengine_never_caches(v):
    post(v, "volcengine", conversation(1))
    assert post(v, "volcengine", conversation(2))["prompt_tokens_details"]["cached_tokens"] == 0


def test_a_prefix_diverging_early_misses_and_one_diverging_late_hits_up_to_the_divergence(v):
    post(v, "deepseek", conversation(1))
    other_system = [{"role": "system", "content": "Different. " + SYSTEM}] + conversation(1)[1:]
    assert post(v, "deepseek", other_system)["prompt_cache_hit_tokens"] == 0
    late = conversation(1)[:1] + [{"role": "user", "content": "An entirely different question."}]
    system_tokens = len(textsim.token_pieces("<|system|>" + SYSTEM))
    assert post(v, "deepseek", late)["prompt_cache_hit_tokens"] == system_tokens // 64 * 64


def test_the_cache_expires_after_the_ttl_and_the_clock_can_be_advanced(v, cluster):
    post(v, "deepseek", conversation(1))
    cluster.advance_cache_clock("deepseek", 3599)
    assert post(v, "deepseek", conversation(2))["prompt_cache_hit_tokens"] > 0  # used again: TTL restarts
    cluster.advance_cache_clock("deepseek", 3601)
    assert post(v, "deepseek", conversation(2))["prompt_cache_hit_tokens"] == 0


def test_tools_are_part_of_the_prompt_and_of_its_cached_prefix(v):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city. " * 30,
                                               "parameters": {"type": "object", "properties": {}}}}]
    plain = post(v, "deepseek", conversation(1, system="Hi."))
    with_tools = post(v, "deepseek", conversation(1, system="Hi."), tools=tools)
    assert with_tools["prompt_tokens"] == vendor_prompt_tokens(conversation(1, system="Hi."), tools=tools)
    assert with_tools["prompt_tokens"] > plain["prompt_tokens"] + 100
    again = post(v, "deepseek", conversation(2, system="Hi."), tools=tools)
    assert again["prompt_cache_hit_tokens"] >= 128


@pytest.mark.parametrize("provider", ["deepseek", "dashscope"])
def test_the_final_streamed_usage_chunk_reports_the_cached_tokens(v, provider):
    unstreamed = post(v, provider, conversation(1))
    body = {"model": MODEL[provider], "messages": conversation(1), "stream": True,
            "stream_options": {"include_usage": True}}
    with v.client.stream("POST", f"{v.cluster.urls[provider]}/chat/completions", json=body,
                         headers=v.auth(provider)) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    usage = orjson.loads(data[-1])["usage"]
    assert usage["prompt_tokens"] == unstreamed["prompt_tokens"]
    cached = usage.get("prompt_cache_hit_tokens", usage.get("prompt_tokens_details", {}).get("cached_tokens"))
    assert cached == (unstreamed["prompt_tokens"] - 1) // 64 * 64


def test_cache_control_endpoint_shows_clears_and_ages_the_cache(v, client, cluster):
    root = cluster.urls["deepseek"].removesuffix(cluster.spec("deepseek").path)
    post(v, "deepseek", conversation(1))
    state = client.get(f"{root}/_cache").json()
    assert state["enabled"] and state["entries"] > 0
    assert (state["block_tokens"], state["min_tokens"], state["ttl_s"]) == (64, 64, 3600)
    assert client.post(f"{root}/_cache", json={"advance_s": 3601}).json()["entries"] == 0
    post(v, "deepseek", conversation(1))
    assert client.post(f"{root}/_cache", json={"clear": True}).json()["entries"] == 0
    assert client.post(f"{root}/_cache", json={"advance_s": "soon"}).status_code == 400
    qianfan_root = cluster.urls["qianfan"].removesuffix(cluster.spec("qianfan").path)
    assert client.get(f"{qianfan_root}/_cache").json() == {"enabled": False}


# --- OpenAI-style vendors: the dialect's own policy, and a per-spec override (a short real TTL) --------------

@pytest.fixture(scope="module")
def openai_vendors() -> Iterator[VendorCluster]:
    models = (ModelSpec("gpt-a", 128_000), ModelSpec("gpt-b", 128_000))
    specs = [VendorSpec("openai", "/v1", "demo-openai-key", models, OPENAI),
             VendorSpec("short-ttl", "/v1", "demo-openai-key", models, OPENAI,
                        cache=CachePolicy(block_tokens=128, min_tokens=1024, ttl_s=0.5))]
    with VendorClusterThread(specs) as c:
        yield c


def _openai(cluster: VendorCluster, model: str, messages: list[dict[str, Any]], vendor: str = "openai") -> dict[str, Any]:
    r = httpx.post(f"{cluster.urls[vendor]}/chat/completions", json={"model": model, "messages": messages},
                   headers={"Authorization": "Bearer demo-openai-key"}, timeout=5)
    return r.json()["usage"]


def test_openai_style_cache_starts_at_1024_tokens_in_128_token_steps_per_model(openai_vendors):
    long_history = conversation(2, system=SYSTEM * 3)
    assert _openai(openai_vendors, "gpt-a", long_history)["prompt_tokens_details"]["cached_tokens"] == 0
    assert _openai(openai_vendors, "gpt-b", long_history)["prompt_tokens_details"]["cached_tokens"] == 0  # per model
    cached = _openai(openai_vendors, "gpt-a", long_history)["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024 and cached % 128 == 0
    short = conversation(2)  # ~500 tokens: below 1,024, never cached
    _openai(openai_vendors, "gpt-a", short)
    assert _openai(openai_vendors, "gpt-a", short)["prompt_tokens_details"]["cached_tokens"] == 0


def test_a_spec_ttl_override_expires_entries_in_real_time(openai_vendors):
    history = conversation(2, system=SYSTEM * 3)
    _openai(openai_vendors, "gpt-b", history, vendor="short-ttl")
    time.sleep(0.7)  # longer than the 0.5 s TTL however slow the machine: only more time can pass
    assert _openai(openai_vendors, "gpt-b", history, vendor="short-ttl")["prompt_tokens_details"]["cached_tokens"] == 0
