"""Plain, immutable facts the gateway reasons about.

Everything here is data: no I/O, no HTTP, no config parsing. Money is always `Decimal`; token counts are `int`.
Decisions (routing, pricing, limits) are pure functions over these types, so they can be tested with literals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from typing import Literal, Mapping

from gateway.money import EXACT

ZERO = Decimal(0)

Mode = Literal["chat", "embedding"]
Capability = Literal["tools", "json_mode", "vision"]
UsageSource = Literal["provider", "estimated"]
DeploymentKey = tuple[str, str]  # (provider, model)


@dataclass(frozen=True, slots=True)
class Tier:
    """Prices for prompts of at most `up_to` tokens (the first tier that fits applies)."""

    up_to: int
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OffPeakWindow:
    """A time-of-day window with its own prices. `start > end` means it crosses midnight."""

    start: time
    end: time
    tz: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """A deployment's price in its own currency, per `per` tokens (1,000 or 1,000,000)."""

    currency: str
    per: int
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    off_peak: tuple[OffPeakWindow, ...] = ()
    cache_write: Decimal | None = None  # tokens written to the vendor's prompt cache (default: input); last, so
    # positional callers keep working


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """The prices that apply to one request, per `per` tokens, in `currency`, one per token direction."""

    currency: str
    per: int
    input: Decimal
    cached_input: Decimal
    output: Decimal
    window: str | None = None  # e.g. "off_peak 16:30-00:30 UTC", for explanations
    tier: int | None = None  # the tier's up_to, when a tier applied
    # Last and defaulted (to `input`, in __post_init__) so positional callers keep working; always a Decimal after.
    cache_write: Decimal = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.cache_write is None:
            object.__setattr__(self, "cache_write", self.input)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model at one provider: the static facts from config (its price lives in the price book)."""

    provider: str
    model: str
    upstream_model: str
    context_window: int
    max_output_tokens: int | None
    quality: int
    capabilities: frozenset[str]
    mode: Mode = "chat"
    price_key: str | None = None

    @property
    def key(self) -> DeploymentKey:
        return (self.provider, self.model)


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """An immutable snapshot of every deployment's price and the FX rates, in force from `effective_from`."""

    version: int
    effective_from: datetime
    reporting_currency: str
    fx_rates: Mapping[str, Decimal]  # reporting-currency units per 1 unit of the named currency
    prices: Mapping[DeploymentKey, Price]

    def fx(self, currency: str) -> Decimal:
        if currency == self.reporting_currency:
            return Decimal(1)
        return self.fx_rates[currency]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request. The directions partition the prompt: `input_tokens` are neither read from nor written
    to the vendor's prompt cache, so input + cached_input + cache_write = the vendor's prompt tokens."""

    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    source: UsageSource = "provider"
    cache_write_tokens: int = 0  # last, so positional callers keep working

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one request, per direction, in the deployment's currency and in the reporting currency."""

    currency: str
    input: Decimal
    cached_input: Decimal
    output: Decimal
    reporting_currency: str
    fx_rate: Decimal
    price_version: int
    unit_prices: UnitPrices
    cache_write: Decimal = ZERO  # after the others, so positional callers keep working
    # Derived once (exact sums cost ~0.5 us each; a request reads them from the header, metrics, budgets, ledger).
    total: Decimal = field(init=False)
    total_reporting: Decimal = field(init=False)

    def __post_init__(self) -> None:
        total = EXACT.add(EXACT.add(self.input, self.cached_input), self.output)
        if self.cache_write:
            total = EXACT.add(total, self.cache_write)
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "total_reporting", EXACT.multiply(total, self.fx_rate))

    @property
    def input_reporting(self) -> Decimal:
        return EXACT.multiply(self.input, self.fx_rate)

    @property
    def cached_input_reporting(self) -> Decimal:
        return EXACT.multiply(self.cached_input, self.fx_rate)

    @property
    def cache_write_reporting(self) -> Decimal:
        return EXACT.multiply(self.cache_write, self.fx_rate)

    @property
    def output_reporting(self) -> Decimal:
        return EXACT.multiply(self.output, self.fx_rate)


@dataclass(frozen=True, slots=True)
class Constraints:
    """What a request (or a route) demands of a deployment. None means "no constraint"."""

    min_quality: int | None = None
    min_context: int | None = None
    providers: frozenset[str] | None = None
    max_cost: Decimal | None = None  # reporting currency, per request, inclusive

    def merged(self, other: Constraints) -> Constraints:
        """The stricter of two sets of constraints (a route's and a request's)."""

        def _max(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else max(a, b)

        providers = self.providers
        if other.providers is not None:
            providers = other.providers if providers is None else providers & other.providers
        max_cost = self.max_cost
        if other.max_cost is not None:
            max_cost = other.max_cost if max_cost is None else min(max_cost, other.max_cost)
        return Constraints(
            min_quality=_max(self.min_quality, other.min_quality),
            min_context=_max(self.min_context, other.min_context),
            providers=providers,
            max_cost=max_cost,
        )


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the router needs to know about a request, parsed once from its body and headers."""

    model: str  # the name the client sent: a route or a model
    mode: Mode
    prompt_tokens: int  # estimated
    requested_output_tokens: int | None  # max_completion_tokens / max_tokens, when the client set one
    expected_output_tokens: int  # requested, or the configured default
    capabilities: frozenset[str] = frozenset()
    constraints: Constraints = field(default_factory=Constraints)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One client request as the ledger records it; opened `in_flight`, closed with its outcome."""

    request_id: str
    started_at: datetime
    team: str
    key_id: str | None
    route: str
    provider: str
    model: str
    upstream_model: str
    price_version: int
    replica_id: str
    prompt_tokens_estimate: int
    stream: bool
    status: str = "in_flight"
    usage: Usage | None = None
    cost: Cost | None = None
    baseline_cost: Decimal | None = None  # reporting currency, when a savings baseline is configured
    attempts: int = 1
    latency_ms: int | None = None
    ttft_ms: int | None = None
    error_kind: str | None = None
    api: str = "chat"  # the inbound API: chat, responses, messages, embeddings
