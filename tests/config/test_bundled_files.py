"""The bundled config files load, and the demo's seed deployments carry exactly the May 2024 price-war table."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config.load import load_config, parse_yaml_text

D = Decimal
REPO = Path(__file__).resolve().parents[2]
PRICE_FILE = REPO / "config" / "prices" / "cn-2024-05.yaml"

# Contract section 9: CNY per 1K tokens, May 2024. (provider, model): (context window, input, output)
SECTION_9 = {
    ("volcengine", "doubao-pro-32k"): (32_000, "0.0008", "0.002"),
    ("volcengine", "doubao-pro-128k"): (128_000, "0.005", "0.009"),
    ("dashscope", "qwen-long"): (10_000_000, "0.0005", "0.002"),
    ("qianfan", "ernie-speed-128k"): (128_000, "0", "0"),
    ("qianfan", "ernie-lite-8k"): (8_000, "0", "0"),
    ("zhipu", "glm-3-turbo"): (128_000, "0.001", "0.001"),
    ("deepseek", "deepseek-v2"): (32_000, "0.001", "0.002"),
    ("hunyuan", "hunyuan-standard"): (32_000, "0.0045", "0.005"),
}


def price_file_entries() -> dict[tuple[str, str], dict]:
    data = parse_yaml_text(PRICE_FILE.read_text(encoding="utf-8"))
    return {(p["provider"], p["model"]): p for p in data["prices"]}


def test_demo_config_loads_with_an_empty_environment() -> None:
    cfg = load_config(REPO / "config" / "demo.yaml", env={})
    assert cfg.gateway.reporting_currency == "CNY"
    assert {"auto", "premium", "long-context"} <= set(cfg.routes)


def test_gateway_config_loads_with_an_empty_environment() -> None:
    cfg = load_config(REPO / "config" / "gateway.yaml", env={})
    assert cfg.providers["deepseek"].api_key is None  # keys come from the environment; none set here
    assert cfg.gateway.redis_url is None


def test_gateway_config_takes_vendor_keys_from_the_environment() -> None:
    cfg = load_config(REPO / "config" / "gateway.yaml", env={"DEEPSEEK_API_KEY": "sk-test"})
    assert cfg.providers["deepseek"].api_key.get_secret_value() == "sk-test"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("provider", "api_base"),
    [
        ("deepseek", "https://api.deepseek.com/v1"),
        ("dashscope", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        ("zhipu", "https://open.bigmodel.cn/api/paas/v4"),
        ("moonshot", "https://api.moonshot.cn/v1"),
        ("volcengine", "https://ark.cn-beijing.volces.com/api/v3"),
        ("qianfan", "https://qianfan.baidubce.com/v2"),
        ("hunyuan", "https://api.hunyuan.cloud.tencent.com/v1"),
        ("deepseek-anthropic", "https://api.deepseek.com/anthropic"),
        ("moonshot-anthropic", "https://api.moonshot.cn/anthropic"),
        ("zhipu-anthropic", "https://open.bigmodel.cn/api/anthropic"),
        ("dashscope-anthropic", "https://dashscope.aliyuncs.com/apps/anthropic"),
    ],
)
def test_gateway_config_points_at_the_real_vendor_endpoints(provider: str, api_base: str) -> None:
    cfg = load_config(REPO / "config" / "gateway.yaml", env={})
    assert cfg.providers[provider].api_base == api_base


def test_anthropic_format_endpoints_are_anthropic_style() -> None:
    cfg = load_config(REPO / "config" / "gateway.yaml", env={})
    styles = {name: p.api_style for name, p in cfg.providers.items() if name.endswith("-anthropic")}
    assert styles == dict.fromkeys(["deepseek-anthropic", "moonshot-anthropic", "zhipu-anthropic",
                                    "dashscope-anthropic"], "anthropic")


def test_price_file_is_exactly_the_section_9_table() -> None:
    entries = price_file_entries()
    assert set(entries) == set(SECTION_9)
    for key, (_, inp, out) in SECTION_9.items():
        p = entries[key]
        assert (p["currency"], p["per"]) == ("CNY", "1K"), key
        assert (D(p["input"]), D(p["output"])) == (D(inp), D(out)), key
        assert not isinstance(p["input"], float) and not isinstance(p["output"], float), key


@pytest.mark.parametrize("config_name", ["demo.yaml", "gateway.yaml"])
def test_seed_deployments_have_exactly_the_price_file_prices(config_name: str) -> None:
    cfg = load_config(REPO / "config" / config_name, env={})
    deployments = {(d.provider, d.model): d for d in cfg.deployments}
    for key, entry in price_file_entries().items():
        assert key in deployments, f"{config_name} lacks seed deployment {key}"
        price = deployments[key].price
        assert price.currency == entry["currency"], key
        assert price.per == entry["per"], key
        assert price.input == D(entry["input"]), key
        assert price.output == D(entry["output"]), key
        assert not price.tiers and not price.off_peak, key


def test_demo_seed_deployments_have_the_section_9_context_windows_and_prices() -> None:
    cfg = load_config(REPO / "config" / "demo.yaml", env={})
    deployments = {(d.provider, d.model): d for d in cfg.deployments}
    # The seed table's vendors as their OpenAI-format endpoints (the demo also reaches DeepSeek's Anthropic one).
    seed = {k: d for k, d in deployments.items() if d.mode == "chat" and cfg.providers[k[0]].api_style == "openai"}
    assert set(seed) == set(SECTION_9)
    for key, (context, inp, out) in SECTION_9.items():
        d = seed[key]
        assert d.context_window == context, key
        assert (d.price.input, d.price.output) == (D(inp), D(out)), key


def test_free_seed_models_are_priced_at_exactly_zero() -> None:
    cfg = load_config(REPO / "config" / "demo.yaml", env={})
    free = {d.model for d in cfg.deployments if d.price.input == 0 and d.price.output == 0}
    assert free == {"ernie-speed-128k", "ernie-lite-8k"}


def test_savings_baseline_of_each_bundled_config_names_one_of_its_deployments() -> None:
    for name in ("demo.yaml", "gateway.yaml"):
        cfg = load_config(REPO / "config" / name, env={})
        assert cfg.savings_baseline is not None
        keys = {(d.provider, d.model) for d in cfg.deployments}
        assert (cfg.savings_baseline.provider, cfg.savings_baseline.model) in keys
