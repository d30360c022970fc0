"""The gateway through the real OpenAI SDK, against real loopback vendors."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest

from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows


def test_non_streaming_goes_to_cheapest_eligible_and_reports_cost_headers(client, gateway, fresh_vendors):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello there"}], max_tokens=20)
    completion = raw.parse()
    assert completion.choices[0].message.content
    # auto = quality >= 70; for a short prompt with 20 output tokens glm-3-turbo (0.001/0.001) is cheapest.
    assert raw.headers["x-gateway-provider"] == "zhipu"
    assert raw.headers["x-gateway-model"] == "glm-3-turbo"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-gateway-currency"] == "CNY"
    usage = completion.usage
    expected = (Decimal(usage.prompt_tokens) * Decimal("0.001") + Decimal(usage.completion_tokens) * Decimal("0.001")) / 1000
    assert Decimal(raw.headers["x-gateway-cost"]) == expected
    assert raw.headers["x-gateway-input-tokens"] == str(usage.prompt_tokens)
    assert raw.headers["x-gateway-output-tokens"] == str(usage.completion_tokens)
    assert raw.headers["x-gateway-request-id"].startswith("gw-")
    assert fresh_vendors.stats("zhipu")["requests"] == 1


def test_client_credentials_and_gateway_field_never_reach_the_vendor(client, fresh_vendors):
    client.chat.completions.create(model="glm-3-turbo", messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"gateway": {"min_quality": 70}})
    stats = fresh_vendors.stats("zhipu")
    assert "gateway" not in stats["last_body"]
    auth = {k.lower(): v for k, v in stats["last_headers"].items()}["authorization"]
    assert auth == "Bearer demo-zhipu-key"


def test_streaming_without_include_usage_hides_usage_but_bills(client, gateway, fresh_vendors):
    chunks = list(client.chat.completions.create(
        model="premium", messages=[{"role": "user", "content": "stream please"}], stream=True, max_tokens=16))
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    body = fresh_vendors.stats("deepseek")["last_body"]
    assert body["stream_options"] == {"include_usage": True}  # always asked of the upstream
    row = ledger_rows(gateway, 1)[0]
    assert row["status"] == "success" and row["usage_source"] == "provider" and row["output_tokens"] == 16


def test_streaming_with_include_usage_passes_one_usage_chunk(client, fresh_vendors):
    chunks = list(client.chat.completions.create(
        model="premium", messages=[{"role": "user", "content": "stream please"}], stream=True, max_tokens=16,
        stream_options={"include_usage": True}))
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0].usage.completion_tokens == 16


def test_stream_from_vendor_with_cumulative_usage_is_billed_once(gateway, fresh_vendors):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    list(client.chat.completions.create(model="hunyuan-standard", messages=[{"role": "user", "content": "hi"}],
                                        stream=True, max_tokens=12))
    row = ledger_rows(gateway, 1)[0]
    assert row["output_tokens"] == 12  # the last cumulative report, not the sum of every chunk


def test_stream_without_vendor_usage_is_counted_locally_and_marked_estimated(gateway, fresh_vendors):
    fresh_vendors.control("deepseek", "no_usage", count=1)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    list(client.chat.completions.create(model="deepseek-v2", messages=[{"role": "user", "content": "hi"}],
                                        stream=True, max_tokens=12))
    row = ledger_rows(gateway, 1)[0]
    assert row["usage_source"] == "estimated" and row["output_tokens"] > 0


def test_embeddings_route_to_embedding_deployments(client):
    raw = client.embeddings.with_raw_response.create(model="embed", input=["价格战", "price war"])
    result = raw.parse()
    assert len(result.data) == 2
    assert raw.headers["x-gateway-provider"] == "zhipu"  # embedding-2 at 0.0005/1K beats 0.0007/1K


def test_models_list_shows_routes_and_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"auto", "premium", "long-context", "qwen-long", "deepseek-v2", "embedding-2"} <= ids


@pytest.mark.parametrize("mode, kind", [("error_500", "http_5xx"), ("error_429", "rate_limited"),
                                        ("error_401", "account"), ("timeout", "timeout")])
def test_upstream_failure_falls_back_to_next_deployment(fresh_vendors, mode, kind):
    def edit(data):
        data["providers"]["deepseek"]["timeout_s"] = 0.5

    fresh_vendors.control("deepseek", mode, count=1, delay_s=2 if mode == "timeout" else 0)
    with GatewayThread(demo_config(fresh_vendors, edit)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="premium", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
        assert raw.headers["x-gateway-provider"] == "volcengine"
        assert raw.headers["x-gateway-attempts"] == "2"
        fallbacks = gw.services.metrics.fallbacks.labels("deepseek", kind)._value.get()
        assert fallbacks == 1


def test_connect_error_falls_back(fresh_vendors):
    def edit(data):
        data["providers"]["deepseek"]["api_base"] = "http://127.0.0.1:9/v1"  # discard port: nothing listens

    with GatewayThread(demo_config(fresh_vendors, edit)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="premium", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
        assert raw.headers["x-gateway-provider"] == "volcengine"


def test_vendor_account_error_text_is_never_relayed(fresh_vendors):
    def edit(data):
        data["routes"]["only-deepseek"] = {"providers": ["deepseek"]}

    fresh_vendors.control("deepseek", "error_401")
    with GatewayThread(demo_config(fresh_vendors, edit)) as gw:
        resp = httpx.post(gw.url + "/v1/chat/completions",
                          json={"model": "only-deepseek", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 502
        err = resp.json()["error"]
        assert err["code"] == "upstream_unavailable" and "deepseek" in err["message"] and "account" in err["message"]
        assert fresh_vendors.spec("deepseek").account_id not in resp.text
    fresh_vendors.control("deepseek", "ok")


def test_all_attempts_timing_out_gives_504(fresh_vendors):
    def edit(data):
        data["routes"]["only-deepseek"] = {"providers": ["deepseek"]}
        data["providers"]["deepseek"]["timeout_s"] = 0.3

    fresh_vendors.control("deepseek", "timeout", delay_s=2)
    with GatewayThread(demo_config(fresh_vendors, edit)) as gw:
        resp = httpx.post(gw.url + "/v1/chat/completions",
                          json={"model": "only-deepseek", "messages": [{"role": "user", "content": "hi"}]})
    fresh_vendors.control("deepseek", "ok")
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "upstream_unavailable"


def test_vendor_400_is_passed_through_and_not_retried(client, fresh_vendors):
    fresh_vendors.control("deepseek", "error_400", count=1)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="premium", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
    assert info.value.status_code == 400
    assert fresh_vendors.stats("volcengine")["requests"] == 0  # no fallback


def test_prompt_too_long_for_every_deployment_is_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="deepseek-v2", messages=[{"role": "user", "content": "word " * 40_000}])
    err = info.value.body
    assert err["code"] == "context_length_exceeded"
    assert "deepseek/deepseek-v2" in err["message"] and "context window is 32000" in err["message"]


def test_no_eligible_deployment_names_every_candidate(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"gateway": {"min_quality": 99}})
    err = info.value.body
    assert err["code"] == "no_eligible_deployment"
    for model in ("doubao-pro-32k", "doubao-pro-128k", "qwen-long", "ernie-speed-128k", "ernie-lite-8k",
                  "glm-3-turbo", "deepseek-v2", "hunyuan-standard"):
        assert model in err["message"]
    assert info.value.response.headers["x-should-retry"] == "false"


def test_two_hundred_k_prompt_goes_to_qwen_long(client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "word " * 200_000}], max_tokens=10)
    assert raw.headers["x-gateway-model"] == "qwen-long"


def test_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("field", ["api_base", "api_key", "base_url"])
def test_client_cannot_choose_upstream_or_credentials(gateway, field):
    resp = httpx.post(gateway.url + "/v1/chat/completions",
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], field: "http://evil"})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == field


def test_bad_json_is_400_and_oversized_body_is_413(gateway):
    resp = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400 and set(resp.json()["error"]) == {"message", "type", "param", "code"}
    big = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]})
    resp = httpx.post(gateway.url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_stream_cut_after_first_byte_ends_with_error_event_and_no_retry(gateway, fresh_vendors):
    fresh_vendors.control("deepseek", "drop_mid_stream", count=1)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      json={"model": "premium", "stream": True, "max_tokens": 30,
                            "messages": [{"role": "user", "content": "hi"}]}) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] != "data: [DONE]"
    assert '"error"' in lines[-1]
    assert fresh_vendors.stats("volcengine")["requests"] == 0
    row = ledger_rows(gateway, 1)[0]
    assert row["status"] == "stream_error"
