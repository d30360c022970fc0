"""The configuration file's shape, as pydantic models that reject unknown keys.

Prices arrive here already as `Decimal` (the loader never produces floats); a float reaching a price field is
refused, so nothing can silently round a price through binary floating point.
"""

from __future__ import annotations

import re
from datetime import time
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.decisions.prefix_cache import CacheSettings
from gateway.domain import Deployment, OffPeakWindow, Price, Tier

_TOKENS_RE = re.compile(r"^\s*(\d+)\s*([KkMm]?)\s*$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def parse_token_count(value: Any) -> int:
    """`32K` -> 32000, `1M` -> 1000000, `4096` -> 4096 (K is 1,000, M is 1,000,000)."""
    if isinstance(value, bool):
        raise ValueError("expected a token count such as 4096, 32K or 1M")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _TOKENS_RE.match(value)
        if m:
            mult = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
            return int(m.group(1)) * mult
    raise ValueError(f"expected a token count such as 4096, 32K or 1M, got {value!r}")


def parse_money(value: Any) -> Decimal:
    """Exact decimal from text or int; floats are refused because they already lost the price's digits."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("prices must be exact decimals (write them as numbers in YAML or strings in JSON)")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(str(value).strip())
        except Exception:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"not a decimal number: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if result < 0:
        raise ValueError(f"must not be negative, got {result}")
    return result


def parse_clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 16:30 as the sexagesimal integer 990.
        return time(value // 60 % 24, value % 60)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
        if m and int(m.group(1)) <= 24 and int(m.group(2)) < 60:
            hour = int(m.group(1))
            return time(0 if hour == 24 else hour, int(m.group(2)))
    raise ValueError(f"expected a time of day like '16:30', got {value!r}")


TokenCount = Annotated[int, BeforeValidator(parse_token_count), Field(ge=0)]
Money = Annotated[Decimal, BeforeValidator(parse_money)]
Clock = Annotated[time, BeforeValidator(parse_clock)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_currency(v: str) -> str:
    if not _CURRENCY_RE.match(v):
        raise ValueError(f"currency must be an ISO 4217 code such as CNY or USD, got {v!r}")
    return v


def _check_tz(v: str) -> str:
    if v.upper() == "UTC":
        return "UTC"
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai, or UTC)") from None
    return v


class TierConfig(_Strict):
    up_to: TokenCount
    input: Money
    output: Money
    cached_input: Money | None = None
    cache_write: Money | None = None


class OffPeakConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    start: Clock = Field(alias="from")
    end: Clock = Field(alias="to")
    tz: str = "UTC"
    input: Money
    output: Money
    cached_input: Money | None = None
    cache_write: Money | None = None

    _tz = field_validator("tz")(_check_tz)


class PriceConfig(_Strict):
    currency: str = "CNY"
    per: Literal["1K", "1M"] = "1K"
    input: Money
    output: Money
    cached_input: Money | None = None
    cache_write: Money | None = None  # tokens written to the vendor's prompt cache (default: input)
    tiers: list[TierConfig] = []
    off_peak: list[OffPeakConfig] = []

    _currency = field_validator("currency")(_check_currency)

    @field_validator("tiers")
    @classmethod
    def _tiers_in_order(cls, tiers: list[TierConfig]) -> list[TierConfig]:
        for i in range(1, len(tiers)):
            if tiers[i].up_to <= tiers[i - 1].up_to:
                raise ValueError(
                    f"tiers out of order: tier {i} up_to {tiers[i].up_to} is not above tier {i - 1}'s "
                    f"{tiers[i - 1].up_to}"
                )
        return tiers

    def to_price(self) -> Price:
        return Price(
            currency=self.currency,
            per=1_000 if self.per == "1K" else 1_000_000,
            input=self.input,
            output=self.output,
            cached_input=self.cached_input,
            cache_write=self.cache_write,
            tiers=tuple(Tier(t.up_to, t.input, t.output, t.cached_input, t.cache_write) for t in self.tiers),
            off_peak=tuple(
                OffPeakWindow(w.start, w.end, w.tz, w.input, w.output, w.cached_input, w.cache_write)
                for w in self.off_peak
            ),
        )


class CacheConfig(_Strict):
    """How a vendor caches prompt prefixes (contract section 3); unset fields inherit (deployment <- provider <-
    defaults). `mode` unset: automatic when the live price has a cached_input below input, else none."""

    mode: Literal["automatic", "explicit", "none"] | None = None
    ttl_s: float | None = Field(None, gt=0)
    min_tokens: TokenCount | None = None
    max_entries: int | None = Field(None, ge=1)  # prefixes remembered per deployment (LRU) in process


def cache_settings(provider: CacheConfig | None, deployment: CacheConfig | None) -> CacheSettings:
    """A deployment's cache settings: its own fields, else its provider's, else the defaults."""
    merged: dict[str, Any] = {}
    for part in (provider, deployment):
        if part is not None:
            merged.update(part.model_dump(exclude_none=True))
    return CacheSettings(**merged)


class GatewaySettings(_Strict):
    reporting_currency: str = "CNY"
    reporting_timezone: str = "UTC"  # calendar days and months of budgets
    ledger_url: str = "sqlite:///gateway.db"
    redis_url: str | None = None
    redis_prefix: str = "gw:"  # key prefix in Redis, so several gateways (or tests) can share one server
    admin_key: SecretStr | None = None
    # HMAC secret for client-key hashes; unset, it is derived from admin_key (rotating that then voids every key).
    key_hash_secret: SecretStr | None = None
    require_api_key: bool = False
    max_attempts: int = Field(3, ge=1)
    default_expected_output_tokens: int = Field(256, ge=0)
    cooldown_after_failures: int = Field(3, ge=1)
    cooldown_s: float = Field(30, ge=0)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    replica_id: str | None = None  # default: hostname-pid, unique per process
    # Durable local journal for ledger rows while the ledger database cannot take them (relative to the working
    # directory, like SQLite paths; created only when first needed).
    spool_dir: str = "./gateway-spool"
    # Redis unreachable: degrade = keep serving on each replica's conservative local share of budgets and rate
    # limits; refuse = 503 state_unavailable before any vendor is called.
    on_shared_state_unavailable: Literal["degrade", "refuse"] = "degrade"

    _currency = field_validator("reporting_currency")(_check_currency)
    _tz = field_validator("reporting_timezone")(_check_tz)


class ProviderConfig(_Strict):
    api_base: str
    api_key: SecretStr | None = None
    api_style: Literal["openai", "anthropic", "litellm"] = "openai"  # anthropic: POST {api_base}/v1/messages
    litellm_provider: str | None = None
    timeout_s: float = Field(60, gt=0)
    cooldown_s: float | None = Field(None, ge=0)
    cooldown_after_failures: int | None = Field(None, ge=1)
    cache: CacheConfig | None = None

    @model_validator(mode="after")
    def _litellm_needs_provider(self) -> ProviderConfig:
        if self.api_style == "litellm" and not self.litellm_provider:
            raise ValueError("api_style litellm needs litellm_provider (e.g. anthropic)")
        if self.api_style == "anthropic" and self.api_base.rstrip("/").endswith("/v1/messages"):
            raise ValueError("api_base of an anthropic-style provider is the base URL: the gateway appends "
                             "/v1/messages")
        return self


class DeploymentConfig(_Strict):
    provider: str
    model: str = Field(min_length=1)
    upstream_model: str | None = None
    context_window: TokenCount
    max_output_tokens: TokenCount | None = None
    quality: int = Field(ge=0, le=100)
    capabilities: list[Literal["tools", "json_mode", "vision"]] = []
    mode: Literal["chat", "embedding"] = "chat"
    price: PriceConfig
    price_key: str | None = None  # entry name in LiteLLM / OpenRouter price files
    cache: CacheConfig | None = None

    def to_deployment(self) -> Deployment:
        return Deployment(
            provider=self.provider,
            model=self.model,
            upstream_model=self.upstream_model or self.model,
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
            quality=self.quality,
            capabilities=frozenset(self.capabilities),
            mode=self.mode,
            price_key=self.price_key,
        )


class RouteConfig(_Strict):
    min_quality: int | None = Field(None, ge=0, le=100)
    min_context: TokenCount | None = None
    providers: list[str] | None = None
    max_cost: Money | None = None


class DeploymentRef(_Strict):
    provider: str
    model: str


class PriceFeedConfig(_Strict):
    url: str
    format: Literal["gateway", "openrouter", "litellm"] = "gateway"
    interval_s: float = Field(300, gt=0)


class Config(_Strict):
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    fx_rates: dict[str, Money] = {}
    providers: dict[str, ProviderConfig]
    deployments: list[DeploymentConfig]
    routes: dict[str, RouteConfig] = Field(default_factory=lambda: {"auto": RouteConfig()})
    savings_baseline: DeploymentRef | None = None
    price_feeds: list[PriceFeedConfig] = []

    @field_validator("fx_rates")
    @classmethod
    def _fx_codes(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, rate in rates.items():
            _check_currency(code)
            if rate <= 0:
                raise ValueError(f"fx rate for {code} must be positive")
        return rates

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        # Raised as ValueError with a key path prefix; load.py turns it into "file: path: reason".
        seen: dict[tuple[str, str], int] = {}
        for i, d in enumerate(self.deployments):
            if d.provider not in self.providers:
                raise PathError(
                    f"deployments.{i}.provider",
                    f"unknown provider {d.provider!r} (known: {', '.join(sorted(self.providers)) or 'none'})",
                )
            key = (d.provider, d.model)
            if key in seen:
                raise PathError(
                    f"deployments.{i}",
                    f"duplicate deployment ({d.provider}, {d.model}); first defined at deployments.{seen[key]}",
                )
            seen[key] = i
            cur = d.price.currency
            if cur != self.gateway.reporting_currency and cur not in self.fx_rates:
                raise PathError(
                    f"deployments.{i}.price.currency",
                    f"no fx_rates entry for {cur} (reporting currency is {self.gateway.reporting_currency})",
                )
        models = {d.model for d in self.deployments}
        for name, route in self.routes.items():
            if name in models:
                raise PathError(f"routes.{name}", f"route name {name!r} is also a deployment's model name")
            for p in route.providers or []:
                if p not in self.providers:
                    raise PathError(f"routes.{name}.providers", f"unknown provider {p!r}")
        if self.savings_baseline is not None:
            ref = (self.savings_baseline.provider, self.savings_baseline.model)
            if ref not in seen:
                raise PathError("savings_baseline", f"no deployment ({ref[0]}, {ref[1]})")
        return self


def deployment_cache_settings(config: Config) -> dict[tuple[str, str], CacheSettings]:
    """Every deployment's cache settings, by (provider, model)."""
    return {(d.provider, d.model): cache_settings(config.providers[d.provider].cache, d.cache)
            for d in config.deployments}


class PathError(ValueError):
    """A validation failure that knows its key path (for cross-field checks pydantic cannot locate)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
