"""`cache:` settings on providers and deployments (contract section 3): validation with key paths, inheritance."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.config.schema import deployment_cache_settings
from gateway.decisions.prefix_cache import AUTOMATIC, EXPLICIT, NONE, CacheSettings, effective_mode
from tests.config.test_load import BASE, refusal, write

PROVIDER_LINE = '  deepseek: {api_base: "https://api.deepseek.com/v1", api_key: "${DEEPSEEK_API_KEY:-}"}\n'
DEPLOYMENT_LINE = "    quality: 86\n"


def with_cache(provider: str | None = None, deployment: str | None = None) -> str:
    text = BASE
    if provider is not None:
        text = text.replace(PROVIDER_LINE, PROVIDER_LINE.replace("}\n", f", cache: {provider}}}\n"))
    if deployment is not None:
        text = text.replace(DEPLOYMENT_LINE, DEPLOYMENT_LINE + f"    cache: {deployment}\n")
    return text


REFUSALS = [
    ("unknown-mode", dict(provider="{mode: sometimes}"), "providers.deepseek.cache.mode", "'automatic', 'explicit'"),
    ("unknown-key", dict(deployment="{mode: automatic, tll_s: 5}"), "deployments.0.cache.tll_s", "unknown key"),
    ("zero-ttl", dict(deployment="{ttl_s: 0}"), "deployments.0.cache.ttl_s", "greater than 0"),
    ("negative-min", dict(provider="{min_tokens: -1}"), "providers.deepseek.cache.min_tokens", "greater than or equal to 0"),
    ("zero-entries", dict(provider="{max_entries: 0}"), "providers.deepseek.cache.max_entries", "greater than or"),
]


@pytest.mark.parametrize(("edit", "key_path", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_cache_settings_are_refused_with_their_key_path(tmp_path: Path, edit: dict[str, str], key_path: str,
                                                           reason: str) -> None:
    message, path = refusal(tmp_path, with_cache(**edit))
    assert message.startswith(f"{path}: {key_path}"), message
    assert reason in message, message


def test_deployment_fields_override_the_providers_and_defaults_fill_the_rest(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, with_cache("{mode: explicit, ttl_s: 600, min_tokens: 2K}",
                                                 "{ttl_s: 60}")), env={})
    s = deployment_cache_settings(cfg)
    assert s[("deepseek", "deepseek-v2")] == CacheSettings(EXPLICIT, 60, 2000, CacheSettings().max_entries)
    assert s[("openai", "gpt-4o")] == CacheSettings()  # nothing set: mode decided by the price


def test_unset_mode_follows_the_cached_price(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), env={})
    s = deployment_cache_settings(cfg)
    prices = {d.provider: d.price.to_price() for d in cfg.deployments}
    assert effective_mode(s[("deepseek", "deepseek-v2")], prices["deepseek"]) == AUTOMATIC  # cached_input < input
    assert effective_mode(s[("openai", "gpt-4o")], prices["openai"]) == NONE  # no cached_input
