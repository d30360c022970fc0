"""The simulated vendors over real HTTP: usage shapes, errors and control modes, embeddings, counters, lifecycle."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo.anthropic_vendor import ANTHROPIC_CACHE
from gateway.demo.prompt_cache import CachePolicy
from gateway.demo.vendors import VendorCluster, default_ports, env_for, run_in_thread, specs_from_config

LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 30  # ~340 tokens: several 64-token cache blocks


# --- non-streaming usage shapes --------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["volcengine", "dashscope"])
def test_openai_style_vendors_report_cached_tokens_in_prompt_tokens_details(v, provider):
    usage = v.chat(provider).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "prompt_cache_hit_tokens" not in usage


@pytest.mark.parametrize("provider", ["qianfan", "zhipu", "hunyuan", "moonshot"])
def test_plain_vendors_report_only_the_three_counts(v, provider):
    usage = v.chat(provider).json()["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_deepseek_reports_cache_hit_and_miss_that_sum_to_prompt_tokens(v):
    first = v.chat("deepseek", LONG_PROMPT).json()["usage"]
    assert first["prompt_cache_hit_tokens"] == 0
    assert first["prompt_cache_miss_tokens"] == first["prompt_tokens"]
    second = v.chat("deepseek", LONG_PROMPT + " And then?").json()["usage"]
    assert second["prompt_cache_hit_tokens"] > 0
    assert second["prompt_cache_hit_tokens"] % 64 == 0
    assert second["prompt_cache_hit_tokens"] + second["prompt_cache_miss_tokens"] == second["prompt_tokens"]


def test_dashscope_serves_a_repeated_prefix_from_cache_and_volcengine_never_does(v):
    v.chat("dashscope", LONG_PROMPT)
    assert v.chat("dashscope", LONG_PROMPT).json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    v.chat("volcengine", LONG_PROMPT)
    assert v.chat("volcengine", LONG_PROMPT).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_reset_forgets_the_prompt_cache(v, cluster):
    v.chat("deepseek", LONG_PROMPT)
    cluster.reset("deepseek")
    assert v.chat("deepseek", LONG_PROMPT).json()["usage"]["prompt_cache_hit_tokens"] == 0


def test_reply_length_follows_max_tokens_and_defaults_to_32(v):
    short = v.chat("qianfan", max_tokens=5).json()
    assert short["usage"]["completion_tokens"] == 5
    assert short["choices"][0]["finish_reason"] == "length"
    default = v.chat("qianfan").json()
    assert default["usage"]["completion_tokens"] == 32
    assert default["choices"][0]["finish_reason"] == "stop"
    assert v.chat("qianfan", max_completion_tokens=7).json()["usage"]["completion_tokens"] == 7


def test_reply_is_deterministic_and_quotes_the_model_and_question(v):
    a = v.chat("zhipu", "什么是价格战").json()
    b = v.chat("zhipu", "什么是价格战").json()
    content = a["choices"][0]["message"]["content"]
    assert content == b["choices"][0]["message"]["content"]
    assert content.startswith("[glm-3-turbo] reply to: 什么是价格战")
    assert a["choices"][0]["message"]["role"] == "assistant"


def test_volcengine_names_the_model_behind_the_endpoint_id(v):
    assert v.chat("volcengine").json()["model"] == "doubao-pro-32k-240515"
    assert v.chat("deepseek").json()["model"] == "deepseek-chat"


# --- errors and authentication ---------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["volcengine", "dashscope", "qianfan", "zhipu", "deepseek", "hunyuan", "moonshot"])
def test_a_wrong_key_is_refused_with_a_body_naming_the_account(v, cluster, provider):
    for headers in (v.auth(provider, "sk-client-key"), {}):
        r = v.chat(provider, headers=headers)
        assert r.status_code == 401
        assert cluster.spec(provider).account_id in r.json()["error"]["message"]
    assert cluster.stats(provider)["requests"] == 2


def test_unknown_model_is_404_model_not_found(v, client, cluster):
    r = client.post(f"{cluster.urls['deepseek']}/chat/completions", headers=v.auth("deepseek"),
                    json={"model": "deepseek-v2", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_zhipu_errors_carry_numeric_string_codes_and_no_type(v, client, cluster):
    r = client.post(f"{cluster.urls['zhipu']}/chat/completions", headers=v.auth("zhipu"),
                    json={"model": "glm-4", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "1211"


def test_prompt_over_the_context_window_is_400(v, client, cluster):
    url = f"{cluster.urls['qianfan']}/chat/completions"

    def send(content: str, **extra: Any) -> httpx.Response:
        body = {"model": "ernie-lite-8k", "messages": [{"role": "user", "content": content}], **extra}
        return client.post(url, json=body, headers=v.auth("qianfan"))

    r = send("x" * 40_000)  # 10,000 tokens > 8K
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    # The window counts the requested output too, as OpenAI does.
    assert send("x" * 28_000).status_code == 200
    assert send("x" * 28_000, max_tokens=2048).status_code == 400


def test_max_tokens_above_the_model_limit_is_400(v):
    assert v.chat("hunyuan", max_tokens=4096).status_code == 400
    assert v.chat("hunyuan", max_tokens=2048).status_code == 200


@pytest.mark.parametrize(
    ("provider", "mode", "status"),
    [("deepseek", "error_500", 500), ("zhipu", "error_500", 500), ("dashscope", "error_429", 429),
     ("qianfan", "error_400", 400), ("hunyuan", "error_401", 401), ("volcengine", "error_401", 403),
     ("deepseek", "error_401", 402)],
)
def test_error_modes_answer_in_the_vendor_format(v, cluster, provider, mode, status):
    cluster.control(provider, mode)
    r = v.chat(provider)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"]
    assert ("type" in err) is (provider != "zhipu")
    if status == 429:
        assert r.headers["retry-after"] == "1"
    if mode == "error_401":
        assert cluster.spec(provider).account_id in err["message"]


def test_control_count_expires_after_that_many_requests(v, cluster):
    cluster.control("deepseek", "error_500", count=2)
    assert [v.chat("deepseek").status_code for _ in range(3)] == [500, 500, 200]
    assert cluster.stats("deepseek")["requests"] == 3


def test_a_mode_without_count_lasts_until_changed(v, cluster):
    cluster.control("qianfan", "error_500")
    assert [v.chat("qianfan").status_code for _ in range(3)] == [500, 500, 500]
    cluster.control("qianfan", "ok")
    assert v.chat("qianfan").status_code == 200


def test_timeout_mode_hangs_past_the_client_timeout(v, client, cluster):
    cluster.control("hunyuan", "timeout", delay_s=2, count=1)
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{cluster.urls['hunyuan']}/chat/completions", headers=v.auth("hunyuan"), timeout=0.2,
                    json={"model": "hunyuan-standard", "messages": [{"role": "user", "content": "hi"}]})


def test_timeout_mode_answers_504_once_its_delay_is_over(v, cluster):
    cluster.control("hunyuan", "timeout", delay_s=0.05, count=1)
    assert v.chat("hunyuan").status_code == 504


def test_slow_mode_delays_the_answer_but_succeeds(v, cluster):
    cluster.control("dashscope", "slow", delay_s=0.3, count=1)
    started = time.monotonic()
    assert v.chat("dashscope").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_drop_mid_stream_cuts_a_non_streamed_body_short(v, cluster):
    cluster.control("qianfan", "drop_mid_stream", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        v.chat("qianfan")


# --- embeddings, models, stats and the HTTP control endpoints --------------------------------------------

def test_embeddings_are_deterministic_vectors_with_usage(v, client, cluster):
    url = f"{cluster.urls['zhipu']}/embeddings"
    body = {"model": "embedding-2", "input": ["alpha", "beta 贝塔"]}
    a = client.post(url, json=body, headers=v.auth("zhipu")).json()
    b = client.post(url, json=body, headers=v.auth("zhipu")).json()
    assert a["data"] == b["data"]
    assert [d["index"] for d in a["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in a["data"])
    assert a["data"][0]["embedding"] != a["data"][1]["embedding"]
    assert a["usage"]["prompt_tokens"] == a["usage"]["total_tokens"] > 0


def test_embeddings_refuse_a_chat_model_and_chat_refuses_an_embedding_model(v, client, cluster):
    r = client.post(f"{cluster.urls['dashscope']}/embeddings", headers=v.auth("dashscope"),
                    json={"model": "qwen-long", "input": "x"})
    assert r.status_code == 400
    r = client.post(f"{cluster.urls['dashscope']}/chat/completions", headers=v.auth("dashscope"),
                    json={"model": "text-embedding-v2", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400


def test_models_lists_the_upstream_models_of_the_demo_config(v, client, cluster):
    r = client.get(f"{cluster.urls['volcengine']}/models", headers=v.auth("volcengine"))
    assert {m["id"] for m in r.json()["data"]} == {"ep-20240515-doubao-pro-32k", "ep-20240515-doubao-pro-128k"}
    assert client.get(f"{cluster.urls['volcengine']}/models").status_code == 401


def test_stats_count_every_chat_and_embedding_request_even_refused_ones(v, client, cluster):
    v.chat("zhipu")
    v.chat("zhipu", stream=True)
    client.post(f"{cluster.urls['zhipu']}/embeddings", json={"model": "embedding-2", "input": "x"}, headers=v.auth("zhipu"))
    client.post(f"{cluster.urls['zhipu']}/chat/completions", json={"model": "glm-3-turbo"}, headers=v.auth("zhipu", "bad"))
    client.get(f"{cluster.urls['zhipu']}/models", headers=v.auth("zhipu"))
    stats = cluster.stats("zhipu")
    assert stats["requests"] == 4
    assert stats["streams"] == 1
    assert stats["by_model"] == {"glm-3-turbo": 3, "embedding-2": 1}
    assert stats["by_endpoint"] == {"chat": 3, "embeddings": 1}
    assert stats["last_headers"]["authorization"] == "Bearer bad"
    assert cluster.stats("deepseek")["requests"] == 0


def test_http_control_stats_and_reset_endpoints(v, client, cluster):
    root = cluster.urls["qianfan"].removesuffix(cluster.spec("qianfan").path)
    r = client.post(f"{root}/_control", json={"mode": "error_429", "count": 1})
    assert r.json() == {"mode": "error_429", "delay_s": 0.0, "count": 1}
    assert v.chat("qianfan").status_code == 429
    assert client.get(f"{root}/_control").json()["mode"] == "ok"
    assert client.get(f"{root}/_stats").json()["requests"] == 1
    assert client.post(f"{root}/_control", json={"mode": "explode"}).status_code == 400
    assert client.post(f"{root}/_control", json={"mode": "slow", "count": 0}).status_code == 400
    client.post(f"{root}/_reset")
    assert client.get(f"{root}/_stats").json()["requests"] == 0


def test_env_for_names_each_providers_url_with_its_api_path(cluster):
    env = env_for(cluster)
    assert env["DEMO_VOLCENGINE_URL"].endswith("/api/v3")
    assert env["DEMO_DASHSCOPE_URL"].endswith("/compatible-mode/v1")
    assert env["DEMO_ZHIPU_URL"].endswith("/api/paas/v4")
    assert env["DEMO_DEEPSEEK_URL"] == cluster.urls["deepseek"]
    assert len({u.rsplit(":", 1)[1].split("/")[0] for u in cluster.urls.values()}) == len(cluster.urls)


async def test_cluster_runs_on_the_callers_event_loop_and_control_works_there(v):
    async with VendorCluster() as c:
        c.control("deepseek", "error_500", count=1)
        async with httpx.AsyncClient() as ac:
            url = f"{c.urls['deepseek']}/chat/completions"
            body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}]}
            codes = [(await ac.post(url, json=body, headers=v.auth("deepseek"))).status_code for _ in range(2)]
        assert codes == [500, 200]
    assert c.stats("deepseek")["requests"] == 2


def test_run_in_thread_stops_and_frees_its_ports(v):
    c, stop = run_in_thread(ports={"deepseek": 0})
    url = c.urls["deepseek"]
    assert httpx.get(f"{url}/models", headers=v.auth("deepseek")).status_code == 200
    stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", headers=v.auth("deepseek"))


def test_default_ports_are_those_of_the_demo_config_urls():
    assert default_ports() == {"volcengine": 18101, "dashscope": 18102, "qianfan": 18103, "zhipu": 18104,
                               "deepseek": 18105, "hunyuan": 18106}


def test_the_demo_configs_deepseek_anthropic_provider_is_the_deepseek_vendors_anthropic_endpoint(cluster):
    specs = {s.provider: s for s in specs_from_config()}
    assert "deepseek-anthropic" not in specs
    assert specs["deepseek"].aliases == ("deepseek-anthropic",)
    assert cluster.spec("deepseek-anthropic") is cluster.spec("deepseek")  # control and stats by either name
    assert specs["deepseek"].anthropic_base == "/anthropic"
    assert {m.name for m in specs["deepseek"].models} == {"deepseek-chat"}
    assert all(s.anthropic_base is None for name, s in specs.items() if name != "deepseek")


def test_cache_settings_of_a_config_set_the_simulated_caches(tmp_path):
    """A config with `cache:` settings (contract section 3) drives the vendors' TTL and minimum; `none` disables."""
    from gateway.config.schema import ProviderConfig

    if "cache" not in ProviderConfig.model_fields:
        pytest.skip("this build's config schema has no cache: settings yet")
    text = (Path(__file__).resolve().parents[2] / "config" / "demo.yaml").read_text(encoding="utf-8")
    for old, new in [("cache: {mode: automatic, ttl_s: 3600, min_tokens: 64}", "cache: {ttl_s: 5, min_tokens: 128}"),
                     ("cache: {mode: explicit, ttl_s: 300, min_tokens: 1024}", "cache: {mode: explicit, ttl_s: 60}"),
                     ("cache: {mode: automatic, ttl_s: 600, min_tokens: 256}", "cache: {mode: none}")]:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    specs = {s.provider: s for s in specs_from_config(path)}
    assert specs["deepseek"].cache_policy == CachePolicy(block_tokens=64, min_tokens=128, ttl_s=5)
    assert specs["deepseek"].anthropic_cache == CachePolicy(block_tokens=1, min_tokens=1024, ttl_s=60)
    assert specs["dashscope"].cache_policy is None
    assert specs["volcengine"].cache_policy is None  # unset: the vendor's own (none)


def test_the_demo_configs_cache_settings_are_the_simulated_vendors_own():
    """The gateway is told exactly how the simulated vendors cache, so its predictions can be checked against them."""
    specs = {s.provider: s for s in specs_from_config()}
    for name, spec in specs.items():
        assert spec.cache_policy == spec.dialect.cache, name
    assert specs["deepseek"].anthropic_cache == ANTHROPIC_CACHE
