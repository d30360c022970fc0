"""Cache-aware routing end to end: the real OpenAI SDK, the gateway on loopback, the simulated vendors' prompt
caches (DeepSeek and DashScope cache prefixes and report the hits in their own usage shapes)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any, Iterator

import openai
import pytest

from gateway.demo.vendors import VendorCluster
from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows

REDIS_URL = "redis://127.0.0.1:6379/0"
SYSTEM = ("You are the support assistant of a large online shop. Answer politely, cite the order number, never "
          "promise refunds you cannot grant, and keep every answer short. ") * 12
POOL = [("deepseek", "deepseek-v2"), ("dashscope", "qwen-long")]
PRICE = {"currency": "CNY", "per": "1K", "input": "0.001", "output": "0.002", "cached_input": "0.0001"}


def tie(data: dict[str, Any]) -> None:
    """DeepSeek and DashScope at the same price and quality, both caching: only latency (or a warm cache) can
    break the tie, and a route `chat` over just those two."""
    for d in data["deployments"]:
        if d["model"] in ("deepseek-v2", "qwen-long"):
            d["price"] = dict(PRICE)
            d["quality"] = 80
            d["capabilities"] = ["json_mode"]
            d["cache"] = {"min_tokens": 256}
    data["routes"]["chat"] = {"providers": ["deepseek", "dashscope"], "min_quality": 80}


def cached_reported(completion: Any) -> int:
    """What the vendor reported as cache hits, in its own shape (DeepSeek's prompt_cache_hit_tokens, else
    prompt_tokens_details.cached_tokens)."""
    usage = completion.usage
    extra = usage.model_extra or {}
    if "prompt_cache_hit_tokens" in extra:
        return int(extra["prompt_cache_hit_tokens"])
    details = usage.prompt_tokens_details
    return int(details.cached_tokens or 0) if details is not None else 0


def converse(client: openai.OpenAI, turns: int, system: str = SYSTEM) -> list[tuple[Any, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    out = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: where is my order {1000 + i}?"})
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages,  # type: ignore
                                                                max_tokens=30)
        completion = raw.parse()
        out.append((raw.headers, completion))
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
    return out


@pytest.fixture()
def tied_gateway(fresh_vendors: VendorCluster) -> Iterator[GatewayThread]:
    with GatewayThread(demo_config(fresh_vendors, tie)) as gw:
        yield gw


def test_a_ten_turn_conversation_stays_on_its_warm_deployment_and_the_ledger_bills_what_the_vendor_reported(
        tied_gateway: GatewayThread, fresh_vendors: VendorCluster) -> None:
    gw = tied_gateway
    # Recent latency would alternate between the two (the tie-break after quality): make the first one seem slow
    # once it has served, so a cache-blind router would move the conversation.
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-x", max_retries=0)
    turns = []
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for i in range(10):
        messages.append({"role": "user", "content": f"Question {i}: where is my order {1000 + i}?"})
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages,  # type: ignore
                                                                max_tokens=30)
        completion = raw.parse()
        turns.append((raw.headers, completion))
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
        lat = gw.services.health.latencies()
        first = turns[0][0]["x-gateway-provider"]
        for key in POOL:  # the warm one is always the slowest now: latency alone would move away from it
            lat[key] = 5.0 if key[0] == first else 0.001
    providers = {h["x-gateway-provider"] for h, _ in turns}
    assert len(providers) == 1, providers
    assert turns[0][0]["x-gateway-expected-cached-tokens"] == "0"
    assert all(int(h["x-gateway-expected-cached-tokens"]) > 0 for h, _ in turns[1:])
    reported = [cached_reported(c) for _, c in turns]
    assert reported[0] == 0 and all(r > 0 for r in reported[1:])  # the vendor really served the history from cache
    rows = ledger_rows(gw, 10)
    assert len(rows) == 10
    price_in, price_cached, price_out = Decimal("0.001"), Decimal("0.0001"), Decimal("0.002")
    for row, (headers, completion), cached in zip(rows, turns, reported):
        usage = completion.usage
        assert row["cached_input_tokens"] == cached
        assert row["input_tokens"] == usage.prompt_tokens - cached
        assert row["output_tokens"] == usage.completion_tokens
        assert Decimal(row["cached_input_cost"]) == Decimal(cached) * price_cached / 1000
        assert Decimal(row["input_cost"]) == Decimal(usage.prompt_tokens - cached) * price_in / 1000
        assert Decimal(row["output_cost"]) == Decimal(usage.completion_tokens) * price_out / 1000
        assert headers["x-gateway-cached-input-tokens"] == str(cached)
    # The metric counts predictions against the vendor's reports.
    m = gw.services.metrics
    provider = turns[0][0]["x-gateway-provider"]
    model = "deepseek-v2" if provider == "deepseek" else "qwen-long"
    hit = m.registry.get_sample_value("gateway_cache_predicted_tokens_total",
                                      {"provider": provider, "model": model, "outcome": "hit"})
    assert hit is not None and hit > 0


def test_explain_shows_expected_cached_tokens_and_the_cold_cost(tied_gateway: GatewayThread) -> None:
    import httpx

    gw = tied_gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-x", max_retries=0)
    (headers, completion), = converse(client, 1)
    body = {"model": "chat", "max_tokens": 30, "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "Question 0: where is my order 1000?"},
        {"role": "assistant", "content": completion.choices[0].message.content},
        {"role": "user", "content": "And the next one?"}]}
    r = httpx.post(gw.url + "/admin/route/explain", json=body, headers={"authorization": "Bearer demo-admin-key"})
    assert r.status_code == 200
    cands = {c["provider"]: c for c in r.json()["candidates"]}
    warm = cands[headers["x-gateway-provider"]]
    cold = cands[({"deepseek", "dashscope"} - {headers["x-gateway-provider"]}).pop()]
    assert warm["expected_cached_tokens"] > 0 and cold["expected_cached_tokens"] == 0
    assert Decimal(warm["expected_cost"]) < Decimal(warm["cold_cost"]) == Decimal(cold["cold_cost"])
    assert r.json()["candidates"][0]["provider"] == headers["x-gateway-provider"]


def test_two_replicas_on_redis_agree_where_a_conversation_is_warm(fresh_vendors: VendorCluster) -> None:
    prefix = f"test:{uuid.uuid4().hex[:10]}:"

    def shared(data: dict[str, Any]) -> None:
        tie(data)
        data["gateway"]["redis_url"] = REDIS_URL
        data["gateway"]["redis_prefix"] = prefix

    try:
        with GatewayThread(demo_config(fresh_vendors, shared)) as a, \
                GatewayThread(demo_config(fresh_vendors, shared)) as b:
            ca = openai.OpenAI(base_url=a.url + "/v1", api_key="sk-x", max_retries=0)
            cb = openai.OpenAI(base_url=b.url + "/v1", api_key="sk-x", max_retries=0)
            messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": "Question 0: where is my order 1000?"}]
            raw = ca.chat.completions.with_raw_response.create(model="chat", messages=messages,  # type: ignore
                                                                max_tokens=30)
            first = raw.headers["x-gateway-provider"]
            messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
            # Replica B never saw the conversation; make its own latency view prefer the other provider.
            for key in POOL:
                b.services.health.latencies()[key] = 5.0 if key[0] == first else 0.001
            for i in range(1, 4):
                messages.append({"role": "user", "content": f"Question {i}: and order {1000 + i}?"})
                client = cb if i % 2 else ca
                deadline = time.monotonic() + 5
                while True:  # A's write of the prefix goes to Redis in the background, right after its answer
                    raw = client.chat.completions.with_raw_response.create(
                        model="chat", messages=messages, max_tokens=30)  # type: ignore
                    if int(raw.headers["x-gateway-expected-cached-tokens"]) > 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert raw.headers["x-gateway-provider"] == first
                assert int(raw.headers["x-gateway-expected-cached-tokens"]) > 0
                assert cached_reported(raw.parse()) > 0
                messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
    finally:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()
