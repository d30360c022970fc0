"""Parsing the gateway's own price files and OpenRouter's listing; matching entries to deployments."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.errors import BadRequest
from gateway.prices.book import version_from_config
from gateway.prices.changes import apply_import
from gateway.prices.formats import match, parse, parse_gateway, parse_openrouter, price_keys, version_document
from tests.prices.conftest import T0, make_config

ROOT = Path(__file__).resolve().parents[2]

OPENROUTER = """{"data": [
  {"id": "openai/gpt-4o", "context_length": 128000,
   "pricing": {"prompt": "0.0000025", "completion": "0.00001", "input_cache_read": "0.00000125"},
   "top_provider": {"max_completion_tokens": 16384}},
  {"id": "deepseek/deepseek-chat", "context_length": 163840,
   "pricing": {"prompt": "0.00000027", "completion": "0.0000011", "input_cache_read": "0.00000007"},
   "top_provider": {"max_completion_tokens": null}},
  {"id": "anthropic/claude-sonnet-4.5", "context_length": 1000000,
   "pricing": {"prompt": "0.000003", "completion": "0.000015", "input_cache_read": "0.0000003",
               "input_cache_write": "0.00000375"},
   "top_provider": {"max_completion_tokens": null}},
  {"id": "openrouter/auto", "context_length": 2000000, "pricing": {"prompt": "-1", "completion": "-1"}},
  {"id": "meta-llama/llama-3-8b-instruct", "context_length": 8192,
   "pricing": {"prompt": "0.00000003", "completion": "0.00000006"}}
]}"""


def test_openrouter_prices_are_exact_usd_per_million_from_the_strings() -> None:
    f = parse_openrouter(OPENROUTER)
    by = {e.name: e for e in f.entries}
    gpt = by["openai/gpt-4o"]
    assert (gpt.fields["input"], gpt.fields["output"], gpt.fields["cached_input"]) == (
        Decimal("2.5"), Decimal("10"), Decimal("1.25"))
    assert gpt.context_window == 128000 and gpt.max_output_tokens == 16384
    assert by["deepseek/deepseek-chat"].fields["input"] == Decimal("0.27")
    assert by["deepseek/deepseek-chat"].max_output_tokens is None
    assert ("openrouter/auto", "no fixed per-token price") in f.skipped  # listed, not silently dropped


def test_openrouter_cache_read_and_write_prices_map_to_cached_input_and_cache_write() -> None:
    by = {e.name: e.fields for e in parse_openrouter(OPENROUTER).entries}
    claude = by["anthropic/claude-sonnet-4.5"]
    assert (claude["input"], claude["cached_input"], claude["cache_write"]) == (
        Decimal("3"), Decimal("0.3"), Decimal("3.75"))
    assert by["openai/gpt-4o"]["cache_write"] is None  # none listed: priced at input


def test_openrouter_import_matches_provider_slash_upstream_model_and_lists_the_rest() -> None:
    config = make_config()
    change = apply_import(version_from_config(config), parse_openrouter(OPENROUTER), config, T0)
    assert change.diff.unchanged == (("openai", "gpt-4o"),)  # same as the config's 2.5 / 10 / 1.25
    deepseek = change.version.prices[("deepseek", "deepseek-v2")]
    assert (deepseek.currency, deepseek.per, deepseek.input, deepseek.cached_input) == (
        "USD", 1_000_000, Decimal("0.27"), Decimal("0.07"))
    assert dict(change.diff.unmatched) == {"meta-llama/llama-3-8b-instruct": "names no configured deployment",
                                           "anthropic/claude-sonnet-4.5": "names no configured deployment",
                                           "openrouter/auto": "no fixed per-token price"}
    assert any("163840" in n for n in change.diff.notes)  # the context window difference is reported


def test_price_key_overrides_the_default_names() -> None:
    config = make_config()
    deps = {d.model: d for d in config.deployments}
    assert price_keys(config, deps["deepseek-v2"]) == ["deepseek/deepseek-chat", "deepseek-chat"]
    assert price_keys(config, deps["claude-sonnet-4-5"]) == ["anthropic/claude-sonnet-4-5-20250929",
                                                              "claude-sonnet-4-5-20250929"]
    assert price_keys(config, deps["doubao-pro-32k"]) == ["volcengine/doubao-pro-32k-240515"]
    f = parse("""{"data": [{"id": "volcengine/doubao-pro-32k-240515",
                  "pricing": {"prompt": "0.0000001", "completion": "0.0000003"}},
                 {"id": "ep-2024-doubao", "pricing": {"prompt": "1", "completion": "1"}}]}""", "openrouter")
    matched, unmatched = match(f, config)
    assert matched[("volcengine", "doubao-pro-32k")].name == "volcengine/doubao-pro-32k-240515"
    assert [e.name for e in unmatched] == ["ep-2024-doubao"]  # the default names do not apply with a price_key


def test_bundled_seed_file_parses_exactly() -> None:
    f = parse_gateway((ROOT / "config/prices/cn-2024-05.yaml").read_text())
    assert f.effective_from is not None and f.effective_from.isoformat() == "2024-05-22T00:00:00+08:00"
    by = {e.name: e.fields for e in f.entries}
    assert by["volcengine/doubao-pro-32k"]["input"] == Decimal("0.0008")
    assert isinstance(by["volcengine/doubao-pro-32k"]["input"], Decimal)
    assert by["dashscope/qwen-long"]["input"] == Decimal("0.0005")
    assert f.fx_rates == {"USD": Decimal("7.10")}


def test_gateway_format_round_trips_through_its_own_rendering() -> None:
    config = make_config()
    v = version_from_config(config)
    doc = version_document(v, config.deployments)
    assert doc["prices"][0] == {"provider": "deepseek", "model": "deepseek-v2", "currency": "CNY", "per": "1K",
                                "input": "0.001", "output": "0.002", "cached_input": "0.0001",
                                "context_window": 32000, "quality": 86}
    back = apply_import(v, parse(json.dumps(doc), "gateway"), config, T0)
    assert not back.diff.has_changes
    assert len(back.diff.unchanged) == len(config.deployments)


def test_unparsable_files_are_refused_with_a_reason() -> None:
    with pytest.raises(BadRequest, match="prices"):
        parse("{}", "gateway")
    with pytest.raises(BadRequest, match="JSON"):
        parse("{not json", "litellm")
    with pytest.raises(BadRequest, match="data"):
        parse("[]", "openrouter")


def test_cache_write_round_trips_at_every_level_and_is_written_only_where_set() -> None:
    config = make_config()
    v = version_from_config(config)
    body = {"prices": [{"provider": "dashscope", "model": "qwen-plus", "cache_write": "1.0000000000000000000000000001",
                        "tiers": [{"up_to": "32K", "input": "0.8", "output": "2", "cache_write": "1"},
                                  {"up_to": "128K", "input": "2.4", "output": "20"}],
                        "off_peak": [{"from": "16:30", "to": "00:30", "input": "0.4", "output": "1",
                                      "cache_write": "0.5"}]}]}
    changed = apply_import(v, parse(json.dumps(body), "gateway"), config, T0)
    doc = version_document(changed.version, config.deployments)
    qwen = next(p for p in doc["prices"] if p["model"] == "qwen-plus")
    assert qwen["cache_write"] == "1.0000000000000000000000000001"
    assert qwen["tiers"] == [{"up_to": 32000, "input": "0.8", "output": "2", "cached_input": None, "cache_write": "1"},
                             {"up_to": 128000, "input": "2.4", "output": "20", "cached_input": None}]
    assert qwen["off_peak"][0]["cache_write"] == "0.5"
    assert "cache_write" not in doc["prices"][0]  # deepseek-v2 has none
    assert "cache_write" in {c.field for c in changed.diff.changed}
    back = apply_import(changed.version, parse(json.dumps(doc), "gateway"), config, T0)
    assert not back.diff.has_changes
    assert back.version.prices[("dashscope", "qwen-plus")] == changed.version.prices[("dashscope", "qwen-plus")]
