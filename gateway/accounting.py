"""Closing the books on one request: price its usage, complete its ledger row, count it, settle its budget and
its tpm (handed to the settler: gateway/limits/settler.py).

Every way a request can end (success, relayed client error, all upstreams failed, stream cut, client gone)
passes through `RequestBooks.close`, so no outcome can skip the ledger or the metrics.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

from gateway.decisions.pricing import price_usage
from gateway.domain import Cost, Deployment, LedgerEntry, PriceVersion, Usage
from gateway.limits.budgets import Reservation
from gateway.metrics import NO_PROVIDER
from gateway.services import Identity, Services

ZERO_USAGE = Usage(0, 0, 0, source="provider")


_ID_MASK = (1 << 80) - 1
_id_base = int.from_bytes(os.urandom(10), "big")
_id_seq = itertools.count()


def new_request_id() -> str:
    """`gw-` + 32 hex digits, like a UUID's: 12 of the time in ms, then 20 of a per-process random 80-bit start
    plus a counter (unique within the process; across processes a collision needs two random starts within a few
    billion of each other in 2^80). Time-ordered, so the ledger's unique index on request_id takes rows at its
    right edge instead of at random pages, and no system call per request (uuid4 reads os.urandom)."""
    return f"gw-{time.time_ns() // 1_000_000:012x}{(_id_base + next(_id_seq)) & _ID_MASK:020x}"


def _reseed_ids_after_fork() -> None:
    global _id_base
    _id_base = int.from_bytes(os.urandom(10), "big")


os.register_at_fork(after_in_child=_reseed_ids_after_fork)


@dataclass
class RequestBooks:
    """The bookkeeping of one request from the moment it is sent upstream."""

    services: Services
    request_id: str
    identity: Identity
    route: str
    started_at: datetime
    started_perf: float
    prices: PriceVersion
    prompt_estimate: int
    stream: bool
    api: str = "chat"  # the inbound API (chat, responses, messages, embeddings): the ledger row's `api`
    reservation: Reservation | None = None
    tpm_estimate: int | None = None  # the tokens the rate limiter charged at admission (None: no limit applied)
    entry: LedgerEntry | None = None
    deployment: Deployment | None = None  # the one being tried now
    closed: bool = False
    # Called with (deployment, usage) when the request ends with an answer (the prefix cache learns from it).
    on_answer: Callable[[Deployment, Usage], None] | None = None

    async def open(self, d: Deployment) -> None:
        """The in-flight row, durable before the first byte goes upstream."""
        self.deployment = d
        if self.entry is not None:
            return
        self.entry = LedgerEntry(
            request_id=self.request_id, started_at=self.started_at, team=self.identity.team,
            key_id=self.identity.key_id, route=self.route, provider=d.provider, model=d.model,
            upstream_model=d.upstream_model, price_version=self.prices.version, replica_id=self.services.replica_id,
            prompt_tokens_estimate=self.prompt_estimate, stream=self.stream, api=self.api,
        )
        await self.services.ledger.open(self.entry)

    def cost_of(self, d: Deployment, usage: Usage) -> Cost | None:
        price = self.prices.prices.get(d.key)
        return None if price is None else price_usage(usage, price, self.prices, self.started_at)

    def baseline_cost(self, usage: Usage) -> Decimal | None:
        base = self.services.baseline
        if base is None:
            return None
        cost = self.cost_of(base, usage)
        return None if cost is None else cost.total_reporting

    async def close(self, d: Deployment | None, status: str, outcome: str, *, usage: Usage | None = None,
                    attempts: int = 1, ttft_s: float | None = None, error_kind: str | None = None,
                    wait: bool = True) -> Cost | None:
        """Complete the row, count the request, settle the reservation. Idempotent."""
        if self.closed:
            return None
        self.closed = True
        s, m = self.services, self.services.metrics
        elapsed = time.perf_counter() - self.started_perf
        cost: Cost | None = None
        baseline: Decimal | None = None
        if d is not None and usage is not None:
            cost = self.cost_of(d, usage)
            baseline = self.baseline_cost(usage)
        # The Redis writes that need not hold up the response (settlement, the prefix cache's) are queued before the
        # row is awaited: they go out in the same loop pass as the row's write, so one wake-up serves both replies.
        if (self.reservation is not None or self.tpm_estimate is not None) and s.settler is not None:
            # tpm counts the tokens actually used (contract 4): the bucket is charged the difference from the
            # admission's estimate (a failed request used none). Sent off the response path, in batches.
            s.settler.settle(self.identity, self.reservation, cost.total_reporting if cost is not None else Decimal(0),
                             self.tpm_estimate, 0 if usage is None else usage.prompt_tokens + usage.output_tokens)
        if self.on_answer is not None and d is not None and usage is not None and status == "success":
            self.on_answer(d, usage)
        e = self.entry
        if e is not None and d is not None:
            self.entry = e = LedgerEntry(
                e.request_id, e.started_at, e.team, e.key_id, e.route, d.provider, d.model, d.upstream_model,
                e.price_version, e.replica_id, e.prompt_tokens_estimate, e.stream, status, usage or ZERO_USAGE, cost,
                baseline, attempts, int(elapsed * 1000), None if ttft_s is None else int(ttft_s * 1000), error_kind,
                e.api,
            )
            await s.ledger.finish(e, wait=wait)
        provider = d.provider if d is not None else NO_PROVIDER
        model = d.model if d is not None else NO_PROVIDER
        m.record_request(self.route, provider, model, outcome)
        if d is not None and self.entry is not None:
            m.observe_duration(provider, model, elapsed)
            if ttft_s is not None:
                m.observe_ttft(provider, model, ttft_s)
        if d is not None and usage is not None and cost is not None:
            m.record_usage(provider, model, self.identity.team, usage, cost, baseline)
        return cost


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
