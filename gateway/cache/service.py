"""The prefix cache as the request path uses it: look up a request's warm deployments before ranking, remember
what was sent, learn from what the vendor reported.

The decisions are the pure functions of `gateway.decisions.prefix_cache`; this module feeds them (hashing, the
store, the clock) and applies their verdicts (trust per deployment, the metric, forgetting a prefix a vendor did
not keep). A pool with no caching deployment costs one dict lookup: no hashing. A lookup never does I/O: with
Redis, the store is replicated into every replica's memory (gateway/cache/store.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from gateway.cache.prefix import PrefixHasher
from gateway.cache.store import LocalPrefixStore, SharedPrefixStore
from gateway.decisions.prefix_cache import (NONE, CacheSettings, Prefix, Rule, effective_mode, expected_cache,
                                            is_miss, next_trust, outcome, probe_indices, stored_indices)
from gateway.domain import Deployment, DeploymentKey, PriceVersion, Usage
from gateway.metrics import Metrics
from gateway.segments import Segments

_DEFAULT = CacheSettings()
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Lookup:
    """A request's prefix and what the model expects per deployment: (cached, cache-write) tokens."""

    prefix: Prefix
    warm: dict[DeploymentKey, tuple[int, int]]
    found: dict[int, dict[DeploymentKey, float]] = field(default_factory=dict)  # by boundary index
    rules: dict[DeploymentKey, Rule] = field(default_factory=dict)  # the pool's caching deployments

    def cached_for(self, key: DeploymentKey) -> int:
        return self.warm.get(key, (0, 0))[0]


class PrefixCache:
    def __init__(self, settings: Mapping[DeploymentKey, CacheSettings], hasher: PrefixHasher,
                 store: LocalPrefixStore, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = dict(settings)
        self.hasher = hasher
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.trust: dict[DeploymentKey, float] = {}
        self._rules: dict[tuple[int, int], tuple[Any, PriceVersion, dict[DeploymentKey, Rule]]] = {}

    def mode(self, key: DeploymentKey, prices: PriceVersion) -> str:
        return effective_mode(self.settings.get(key, _DEFAULT), prices.prices.get(key))

    def rules(self, pool: Sequence[Deployment], prices: PriceVersion) -> dict[DeploymentKey, Rule]:
        """The pool's caching deployments: (mode, TTL the gateway trusts, min_tokens). Planned once per pool and
        price version (the default mode follows the live price); trust applied on top when some is reduced."""
        memo = self._rules.get((id(pool), id(prices)))
        if memo is None or memo[0] != pool or memo[1] is not prices:
            base: dict[DeploymentKey, Rule] = {}
            for d in pool:
                s = self.settings.get(d.key, _DEFAULT)
                mode = effective_mode(s, prices.prices.get(d.key))
                if mode != NONE:
                    base[d.key] = (mode, s.ttl_s, s.min_tokens)
            if len(self._rules) >= 64:
                self._rules.clear()
            memo = self._rules[(id(pool), id(prices))] = (list(pool), prices, base)
        rules = memo[2]
        if self.trust and rules:
            trust = self.trust
            rules = {k: (m, ttl * trust.get(k, 1.0), mn) for k, (m, ttl, mn) in rules.items()}
        return rules

    async def lookup(self, body: Mapping[str, Any], pool: Sequence[Deployment], prices: PriceVersion,
                     segments: Segments | None = None) -> Lookup | None:
        """The request's expected cache hits per deployment of `pool`; None when none of them caches. `segments`:
        the parse's measure of `body` (`ParsedRequest.segments`), so the conversation is not walked again."""
        rules = self.rules(pool, prices)
        if not rules:
            return None
        prefix = self.hasher.prefix(body, segments)
        if not prefix.hashes:
            return None
        probes = probe_indices(prefix)
        hashes = prefix.hashes
        wanted = [hashes[i] for i in probes]
        by_pos = self.store.found_now(wanted)  # memory, also with Redis (replicated: gateway/cache/store.py)
        found = {probes[pos]: e for pos, e in by_pos.items()}
        warm = expected_cache(prefix, found, rules, self.clock()) if found or prefix.marks else {}
        return Lookup(prefix, warm, found, rules)

    async def hint(self, body: Mapping[str, Any], pool: Sequence[Deployment], prices: PriceVersion,
                   segments: Segments | None = None) -> Lookup | None:
        """`lookup` for the request path: any failure only loses the hint (the request ranks at list prices)."""
        try:
            return await self.lookup(body, pool, prices, segments)
        except Exception:
            log.warning("prefix cache lookup failed; ranking at list prices", exc_info=True)
            return None

    def on_answer(self, lookup: Lookup, prices: PriceVersion) -> Callable[[Deployment, Usage], None]:
        """What the books call when the request is answered: learn from the vendor's reported cached tokens, then
        remember the prefix as sent to that deployment."""

        def answered(d: Deployment, usage: Usage) -> None:
            self.observe(d, lookup, usage)
            self.sent(d, lookup, prices)

        return answered

    def sent(self, d: Deployment, lookup: Lookup | None, prices: PriceVersion) -> None:
        """Remember the prefix just sent to `d` (its vendor now holds it, for its TTL)."""
        if lookup is None:
            return
        rule = lookup.rules.get(d.key)  # the pool's caching deployments, with their mode, for this request
        if rule is None:
            return
        mode = rule[0]
        s = self.settings.get(d.key, _DEFAULT)
        hashes = [lookup.prefix.hashes[i] for i in stored_indices(lookup.prefix, mode)]
        if not hashes:
            return
        self.store.remember_now(d.key, hashes, self.clock(), s.ttl_s, s.max_entries)

    def observe(self, d: Deployment, lookup: Lookup | None, usage: Usage) -> None:
        """Compare the vendor's reported cached tokens with the prediction: count it, adjust the trust in `d`'s
        cache, and forget the prefixes a vendor did not keep."""
        if usage.source != "provider":
            return
        predicted = lookup.cached_for(d.key) if lookup is not None else 0
        reported = usage.cached_input_tokens
        if not predicted and not reported:
            return
        if self.metrics is not None:
            self.metrics.record_cache_prediction(d.provider, d.model, *outcome(predicted, reported))
        trust = self.trust.get(d.key, 1.0)
        new = next_trust(trust, predicted, reported)
        if new != trust:
            if new >= 1.0:
                self.trust.pop(d.key, None)
            else:
                self.trust[d.key] = new
        if lookup is not None and is_miss(predicted, reported):
            # The prefixes the vendor did not keep; those this request just wrote (`sent`) are fresh again.
            rule = lookup.rules.get(d.key)
            fresh = set(stored_indices(lookup.prefix, rule[0])) if rule is not None else set()
            stale = [lookup.prefix.hashes[i] for i, e in lookup.found.items() if d.key in e and i not in fresh]
            self.store.forget_now(d.key, stale)


    def unpredicted(self, d: Deployment, usage: Usage) -> None:
        """An answer for which nothing was predicted (no deployment of its pool caches, as configured): what the
        vendor served from its cache anyway is counted as unpredicted."""
        if usage.cached_input_tokens and usage.source == "provider" and self.metrics is not None:
            self.metrics.record_cache_prediction(d.provider, d.model, 0, 0, usage.cached_input_tokens)

    async def start(self) -> None:
        """Start receiving the other replicas' prefixes (with Redis)."""
        await self.store.start()

    async def aclose(self) -> None:
        """Send the changes still queued for the other replicas (at shutdown) and stop listening."""
        await self.store.aclose()


def build_prefix_cache(settings: Mapping[DeploymentKey, CacheSettings], counter: Any, redis: Any, redis_prefix: str,
                       metrics: Metrics | None, deployments: Sequence[Deployment] = (),
                       replica_id: str | None = None) -> PrefixCache:
    store = LocalPrefixStore() if redis is None else SharedPrefixStore(
        redis, redis_prefix, replica_id=replica_id, max_entries=lambda key: settings.get(key, _DEFAULT).max_entries)
    if metrics is not None:  # every chat deployment's series exist from the start (dashboards see zeros)
        for d in deployments:
            if d.mode == "chat":
                metrics.record_cache_prediction(d.provider, d.model, 0, 0, 0)
    return PrefixCache(settings, PrefixHasher(counter), store, metrics)
