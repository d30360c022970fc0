"""Shared fixtures for the price-table tests: a small config, a fresh ledger database, a Redis key prefix."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway.config.load import load_config_data, parse_yaml_text
from gateway.config.schema import Config

CONFIG_YAML = """
gateway:
  reporting_currency: CNY
  admin_key: test-admin-key
fx_rates: {USD: 7.10}
providers:
  deepseek: {api_base: "http://127.0.0.1:1/v1"}
  dashscope: {api_base: "http://127.0.0.1:1/v1"}
  volcengine: {api_base: "http://127.0.0.1:1/v1"}
  openai: {api_base: "http://127.0.0.1:1/v1"}
  anthropic: {api_base: "http://127.0.0.1:1", api_style: litellm, litellm_provider: anthropic}
deployments:
  - {provider: deepseek, model: deepseek-v2, upstream_model: deepseek-chat, context_window: 32K, quality: 86,
     price: {currency: CNY, per: 1K, input: 0.001, output: 0.002, cached_input: 0.0001}}
  - {provider: dashscope, model: qwen-long, context_window: 10M, quality: 80,
     price: {currency: CNY, per: 1K, input: 0.02, output: 0.02}}
  - {provider: dashscope, model: qwen-plus, context_window: 131072, quality: 85,
     price: {currency: CNY, per: 1M, input: 0.8, output: 2,
             tiers: [{up_to: 32K, input: 0.8, output: 2}, {up_to: 128K, input: 2.4, output: 20}]}}
  - {provider: volcengine, model: doubao-pro-32k, upstream_model: ep-2024-doubao, context_window: 32K, quality: 82,
     price_key: volcengine/doubao-pro-32k-240515,
     price: {currency: CNY, per: 1K, input: 0.0008, output: 0.002}}
  - {provider: openai, model: gpt-4o, context_window: 128K, quality: 95,
     price: {currency: USD, per: 1M, input: 2.5, output: 10, cached_input: 1.25}}
  - {provider: anthropic, model: claude-sonnet-4-5, upstream_model: claude-sonnet-4-5-20250929, context_window: 200K,
     quality: 94, price: {currency: USD, per: 1M, input: 3, output: 15}}
"""

T0 = datetime(2024, 5, 20, 12, 0, tzinfo=timezone.utc)


def make_config(extra: str = "") -> Config:
    return load_config_data(parse_yaml_text(CONFIG_YAML + extra), "test.yaml", env={})


@pytest.fixture
def config() -> Config:
    return make_config()


class Clock:
    """A settable clock for the store (so scheduled versions can be tested without sleeping)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
