"""Everything the request path needs, built once at start-up by `gateway.app` and passed around explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config.schema import Config
from gateway.domain import Deployment
from gateway.ledger.base import Ledger
from gateway.metrics import Metrics
from gateway.prices.book import PriceBook
from gateway.providers.base import Provider
from gateway.state.base import Health
from gateway.tokens import TokenCounter


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request belongs to: the team of its gateway key, or `default`."""

    team: str = "default"
    key_id: str | None = None
    limits: Any = None  # the key's rpm/tpm/budget as the key store defines them


DEFAULT_IDENTITY = Identity()


@dataclass
class Services:
    config: Config
    deployments: list[Deployment]
    price_book: PriceBook
    health: Health
    ledger: Ledger
    metrics: Metrics
    providers: dict[str, Provider]
    tokens: TokenCounter
    replica_id: str
    auth: Any = None  # authenticate(headers) -> Identity (gateway.http.auth)
    budgets: Any = None  # gateway.limits.budgets.Budgets: scopes, spent (reservations go through `admission`)
    ratelimit: Any = None  # gateway.limits.ratelimit.RateLimiter (the request path uses `admission`)
    admission: Any = None  # gateway.limits.admission.Admission: rate limits + budget reservation, together
    settler: Any = None  # gateway.limits.settler.Settler: a finished request's settlement, off its response path
    keys: Any = None
    engine: Any = None  # the ledger database (AsyncEngine), when configured
    price_store: Any = None
    redis: Any = None
    shared_state: Any = None  # gateway.limits.degrade.SharedState in degrade mode with Redis
    closers: list[Any] = field(default_factory=list)  # async stop() callables, run in order at shutdown
    by_model: dict[str, list[Deployment]] = field(default_factory=dict)
    by_mode: dict[str, list[Deployment]] = field(default_factory=dict)
    baseline: Deployment | None = None
    price_gauges: Any = None  # gateway.prices.gauges.PriceGaugeWatcher: the price gauges follow the book
    prefix_cache: Any = None  # gateway.cache.service.PrefixCache: expected prompt-cache hits per deployment
    api_styles: dict[str, str] = field(default_factory=dict)  # provider -> its api_style (which wire dialect)

    def __post_init__(self) -> None:
        for d in self.deployments:
            self.by_model.setdefault(d.model, []).append(d)
            self.by_mode.setdefault(d.mode, []).append(d)
        self.api_styles = {name: p.api_style for name, p in self.config.providers.items()}
        ref = self.config.savings_baseline
        if ref is not None:
            self.baseline = next(d for d in self.deployments if d.key == (ref.provider, ref.model))

    def refresh_gauges(self) -> None:
        """Gauges that mirror state: read at scrape time (and, with `--workers N`, every second in every worker,
        see gateway/http/ops_routes.py), so they are never stale."""
        from gateway.accounting import utc_now

        m = self.metrics
        cooling = self.health.cooling()
        for name in self.config.providers:
            m.provider_healthy.labels(name).set(0 if name in cooling else 1)
        m.ledger_pending.set(self.ledger.pending_rows())
        if self.price_gauges is not None:  # the version and the prices it holds, together: never one without the other
            self.price_gauges.check()
            return
        book = self.price_store.book if self.price_store is not None else self.price_book  # the live book
        m.price_version.set(book.current(utc_now()).version)
