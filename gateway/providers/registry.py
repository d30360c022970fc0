"""The one place that knows which adapter serves which `api_style`."""

from __future__ import annotations

from gateway.config.schema import Config
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.litellm_adapter import LitellmProvider
from gateway.providers.openai_compat import OpenAICompatProvider


def build_providers(config: Config) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, cfg in config.providers.items():
        if cfg.api_style == "openai":
            providers[name] = OpenAICompatProvider(name, cfg)
        elif cfg.api_style == "anthropic":
            providers[name] = AnthropicProvider(name, cfg)
        else:
            providers[name] = LitellmProvider(name, cfg)
    return providers
