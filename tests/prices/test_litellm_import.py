"""Importing the real LiteLLM price map that ships in the installed package: exact numbers, tiers, speed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config.schema import PriceConfig
from gateway.prices.changes import apply_import
from gateway.prices.book import version_from_config
from gateway.prices.formats import parse_litellm
from tests.prices.conftest import T0, make_config


def _map_path() -> Path:
    # Located without importing litellm (slow, and the gateway never needs it for prices).
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"


@pytest.fixture(scope="module")
def text() -> str:
    return _map_path().read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def raw(text: str) -> dict:
    """An independent parse keeping every number as its JSON text."""
    return json.loads(text, parse_float=str, parse_int=str)


def _usd_per_million(text: str) -> Decimal:
    return Decimal(text).scaleb(6)


def test_every_imported_price_equals_the_json_text(text: str, raw: dict) -> None:
    parsed = parse_litellm(text)
    assert len(parsed.entries) > 2000  # thousands of entries, as shipped
    checked = 0
    float_would_differ = 0
    for e in parsed.entries:
        item = raw[e.name]
        for src, dst in (("input_cost_per_token", "input"), ("output_cost_per_token", "output"),
                         ("cache_read_input_token_cost", "cached_input"),
                         ("cache_creation_input_token_cost", "cache_write")):
            if src in item and not item.get("tiered_pricing"):
                expected = _usd_per_million(item[src])
                assert e.fields[dst] == expected, (e.name, src)
                assert str(expected) == str(Decimal(item[src]).scaleb(6))
                checked += 1
                if Decimal(repr(float(item[src]) * 1_000_000)) != expected:
                    float_would_differ += 1
        if isinstance(item.get("max_input_tokens"), str) and item["max_input_tokens"].isdigit():
            assert e.context_window == int(item["max_input_tokens"])
        if isinstance(item.get("max_output_tokens"), str) and item["max_output_tokens"].isdigit():
            assert e.max_output_tokens == int(item["max_output_tokens"])
        assert e.fields["currency"] == "USD" and e.fields["per"] == "1M"
    print(f"\nchecked {checked} prices exactly; a float path would have changed {float_would_differ} of them")
    assert checked > 5000
    # Every entry not imported is accounted for, with a reason.
    assert len(parsed.entries) + len(parsed.skipped) == len([k for k in raw if k != "sample_spec"])


def test_above_n_k_tokens_keys_become_tiers(text: str, raw: dict) -> None:
    parsed = {e.name: e for e in parse_litellm(text).entries}
    pattern = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")
    seen = 0
    for name, item in raw.items():
        keys = [m for k in item if isinstance(item, dict) and (m := pattern.match(k))]
        if not keys or name not in parsed or item.get("tiered_pricing"):
            continue
        seen += 1
        threshold = int(keys[0].group(1)) * 1000
        tiers = parsed[name].fields["tiers"]
        assert tiers[0]["up_to"] == threshold
        assert tiers[0]["input"] == _usd_per_million(item["input_cost_per_token"])
        above = item[keys[0].group(0)]
        assert tiers[1]["input"] == _usd_per_million(above)
        out_above = item.get(f"output_cost_per_token_above_{keys[0].group(1)}k_tokens")
        if out_above is not None:
            assert tiers[1]["output"] == _usd_per_million(out_above)
        PriceConfig.model_validate(parsed[name].fields)  # in order, valid for the pricing code
    assert seen > 50


def test_cache_creation_and_read_costs_map_to_cache_write_and_cached_input(text: str, raw: dict) -> None:
    parsed = {e.name: e for e in parse_litellm(text).entries}
    sonnet = PriceConfig.model_validate(parsed["claude-sonnet-4-5-20250929"].fields).to_price()
    assert (sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.output) == (
        Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("15"))  # USD per 1M, from 3e-06, 3e-07, 3.75e-06
    seen = 0
    for name, item in raw.items():
        above = [k for k in item if isinstance(item, dict) and re.fullmatch(
            r"cache_creation_input_token_cost_above_\d+k_tokens", k)] if isinstance(item, dict) else []
        if not above or name not in parsed or item.get("tiered_pricing"):
            continue
        tiers = parsed[name].fields["tiers"]
        tier = next(t for t in tiers if t["up_to"] > int(re.findall(r"\d+", above[0])[0]) * 1000)
        assert tier["cache_write"] == _usd_per_million(item[above[0]]), name
        if "cache_creation_input_token_cost" in item:
            assert tiers[0]["cache_write"] == _usd_per_million(item["cache_creation_input_token_cost"])
        seen += 1
    assert seen > 10


def test_tiered_pricing_ranges_become_tiers(text: str, raw: dict) -> None:
    parsed = {e.name: e for e in parse_litellm(text).entries}
    seen = 0
    for name, item in raw.items():
        listed = item.get("tiered_pricing") if isinstance(item, dict) else None
        if not listed or "range" not in listed[0] or name not in parsed:
            continue
        seen += 1
        tiers = parsed[name].fields["tiers"]
        assert [t["up_to"] for t in tiers] == [int(Decimal(t["range"][1])) for t in listed]
        assert [t["input"] for t in tiers] == [_usd_per_million(t["input_cost_per_token"]) for t in listed]
        assert [t["output"] for t in tiers] == [_usd_per_million(t["output_cost_per_token"]) for t in listed]
        price = PriceConfig.model_validate(parsed[name].fields).to_price()
        assert price.input == tiers[0]["input"]
    assert seen > 10


def test_import_matches_deployments_by_price_key_and_reports_the_rest(text: str) -> None:
    config = make_config()
    base = version_from_config(config)
    change = apply_import(base, parse_litellm(text), config, T0)
    diff = change.diff
    # deepseek/deepseek-chat names the deepseek-v2 deployment (provider/upstream_model); gpt-4o by its bare name;
    # anthropic's by litellm_provider/upstream_model.
    assert ("deepseek", "deepseek-v2") in diff.changed_deployments
    assert change.version.prices[("deepseek", "deepseek-v2")].currency == "USD"
    assert change.version.prices[("deepseek", "deepseek-v2")].per == 1_000_000
    assert ("openai", "gpt-4o") in set(diff.changed_deployments) | set(diff.unchanged)
    assert ("anthropic", "claude-sonnet-4-5") in set(diff.changed_deployments) | set(diff.unchanged)
    # Not silently dropped: every other entry is listed as unmatched, every unpriced deployment as not named.
    assert len(diff.unmatched) > 3000
    assert ("volcengine", "doubao-pro-32k") in diff.not_named  # its price_key is not in the map


def test_import_speed_is_well_under_a_second_per_thousand_entries(text: str) -> None:
    config = make_config()
    base = version_from_config(config)
    t = time.perf_counter()
    parsed = parse_litellm(text)
    parse_s = time.perf_counter() - t
    t = time.perf_counter()
    apply_import(base, parsed, config, T0)
    apply_s = time.perf_counter() - t
    t = time.perf_counter()
    for e in parsed.entries:  # what validating every entry (not only the matched ones) would cost
        PriceConfig.model_validate(e.fields)
    validate_s = time.perf_counter() - t
    n = len(parsed.entries) + len(parsed.skipped)
    print(f"\nLiteLLM map: {n} entries, {os.path.getsize(_map_path())} bytes; parse {parse_s * 1000:.1f} ms, "
          f"apply {apply_s * 1000:.1f} ms, validate all {validate_s * 1000:.1f} ms "
          f"=> {(parse_s + apply_s + validate_s) / n * 1_000_000:.1f} ms per thousand entries")
