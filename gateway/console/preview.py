"""Before a price change: which recent requests would now route differently. A pure function over plain data.

The sample is the ledger's most recent successful requests (their route and recorded token counts). Each distinct
(route, prompt tokens, output tokens) is ranked by the router itself (`decisions.routing.rank`, as `gateway
route` does) under the table in force and under the proposed one; a request "moves" when its first choice
changes. Real traffic is the honest sample: it has the operator's own mix of routes and sizes, which a fixed set
of representative requests would only guess. What the ledger does not record (tools, JSON mode, per-request
constraints) is not re-applied, so the preview is the ranking by price, size and route constraints; the page says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Iterable

from gateway.config.schema import Config
from gateway.decisions.routing import rank
from gateway.domain import DeploymentKey, PriceVersion
from gateway.errors import GatewayError
from gateway.money import EXACT
from gateway.offline import dry_run_facts


@dataclass(frozen=True, slots=True)
class Sample:
    route: str
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Move:
    route: str
    before: DeploymentKey | None  # first choice under the table in force (None: nothing eligible)
    after: DeploymentKey | None
    requests: int
    cost_before: Decimal  # expected cost of those requests at their first choice, reporting currency
    cost_after: Decimal


@dataclass(frozen=True, slots=True)
class Preview:
    sampled: int
    moves: tuple[Move, ...]
    cost_before: Decimal  # every sampled request at its first choice, before and after
    cost_after: Decimal

    @property
    def moved(self) -> int:
        return sum(m.requests for m in self.moves)


def _first(config: Config, s: Sample, prices: PriceVersion, now: datetime) -> tuple[DeploymentKey | None, Decimal]:
    facts, pool, _, _ = dry_run_facts(config, s.route, s.prompt_tokens, s.output_tokens, None, prices)
    decision = rank(facts, pool, prices, now)
    if not decision.candidates:
        return None, Decimal(0)
    top = decision.candidates[0]
    return top.deployment.key, top.expected_cost


def reroute(config: Config, samples: Iterable[Sample], old: PriceVersion, new: PriceVersion,
            now: datetime) -> Preview:
    counts = Counter(samples)
    moves: dict[tuple[str, DeploymentKey | None, DeploymentKey | None], list[Decimal | int]] = {}
    total_before = total_after = Decimal(0)
    for sample, n in counts.items():
        try:
            before, cost_b = _first(config, sample, old, now)
            after, cost_a = _first(config, sample, new, now)
        except GatewayError:  # a route or model no longer configured: nothing to compare
            continue
        cost_b, cost_a = EXACT.multiply(cost_b, Decimal(n)), EXACT.multiply(cost_a, Decimal(n))
        total_before, total_after = EXACT.add(total_before, cost_b), EXACT.add(total_after, cost_a)
        if before != after:
            acc = moves.setdefault((sample.route, before, after), [0, Decimal(0), Decimal(0)])
            acc[0] = int(acc[0]) + n
            acc[1] = EXACT.add(Decimal(acc[1]), cost_b)
            acc[2] = EXACT.add(Decimal(acc[2]), cost_a)
    out = tuple(Move(route, b, a, int(v[0]), Decimal(v[1]), Decimal(v[2]))
                for (route, b, a), v in sorted(moves.items(), key=lambda kv: (-int(kv[1][0]), str(kv[0]))))
    return Preview(sum(counts.values()), out, total_before, total_after)
