"""The proposed router (routing_fast.py) against gateway/decisions/routing.py: same decisions, and how much faster.

    .venv/bin/python -m tests.perf.proposals.check_routing
"""

from __future__ import annotations

import random
import time
from datetime import datetime, time as dtime, timezone
from decimal import Decimal

from gateway.decisions import routing
from gateway.domain import Constraints, Deployment, OffPeakWindow, Price, PriceVersion, RequestFacts, Tier
from tests.perf.proposals import routing_fast


def world(n: int, rnd: random.Random) -> tuple[list[Deployment], PriceVersion]:
    pool = [Deployment(provider=f"p{i % 7}", model=f"m{i}", upstream_model=f"m{i}",
                       context_window=rnd.choice((4_000, 8_000, 32_000, 128_000)),
                       max_output_tokens=rnd.choice((None, 2048, 4096)), quality=rnd.randint(40, 95),
                       capabilities=frozenset(rnd.sample(["tools", "json_mode", "vision"], rnd.randint(0, 3))),
                       mode=rnd.choice(("chat", "chat", "chat", "embedding")))
            for i in range(n)]
    prices = {}
    for d in pool:
        if rnd.random() < 0.05:
            continue  # no price
        kw = {}
        if rnd.random() < 0.2:
            kw["tiers"] = (Tier(up_to=1000, input=Decimal("0.001"), output=Decimal("0.002")),
                           Tier(up_to=100_000, input=Decimal("0.003"), output=Decimal("0.004")))
        if rnd.random() < 0.2:
            kw["off_peak"] = (OffPeakWindow(start=dtime(16, 30), end=dtime(0, 30), tz="UTC",
                                            input=Decimal("0.0002"), output=Decimal("0.0004")),)
        prices[d.key] = Price(currency=rnd.choice(("CNY", "USD")), per=rnd.choice((1000, 1_000_000)),
                              input=Decimal(rnd.randint(0, 50)) / 10_000, output=Decimal(rnd.randint(0, 90)) / 10_000,
                              cached_input=None, **kw)
    pv = PriceVersion(version=1, effective_from=datetime(2024, 1, 1, tzinfo=timezone.utc), reporting_currency="CNY",
                      fx_rates={"USD": Decimal("7.10")}, prices=prices)
    return pool, pv


def flat(d: object) -> tuple[object, ...]:
    """A decision as plain tuples (the two modules define their own, unequal, dataclasses); costs as text so that
    even the Decimal's exponent must match."""
    return (tuple((c.deployment, str(c.expected_cost), c.unit_prices, c.recent_latency_s) for c in d.candidates),
            tuple((e.deployment, e.reason, e.detail) for e in d.excluded))


def main() -> None:
    rnd = random.Random(8)
    checked = 0
    for trial in range(300):
        pool, pv = world(rnd.randint(1, 60), rnd)
        for _ in range(5):
            facts = RequestFacts(
                model="auto", mode=rnd.choice(("chat", "embedding")), prompt_tokens=rnd.randint(1, 40_000),
                requested_output_tokens=rnd.choice((None, 100, 3000, 5000)), expected_output_tokens=256,
                capabilities=frozenset(rnd.sample(["tools", "json_mode", "vision"], rnd.randint(0, 2))),
                constraints=Constraints(min_quality=rnd.choice((None, 60, 80)),
                                        min_context=rnd.choice((None, 30_000)),
                                        providers=rnd.choice((None, frozenset({"p1", "p2", "p3"}))),
                                        max_cost=rnd.choice((None, Decimal("0.01"), Decimal("1")))))
            now = datetime(2024, 5, 1, rnd.randint(0, 23), tzinfo=timezone.utc)
            cooling = rnd.choice((frozenset(), frozenset({"p4"})))
            lat = {d.key: rnd.random() for d in pool if rnd.random() < 0.5}
            a = routing.rank(facts, pool, pv, now, cooling, lat)
            b = routing_fast.rank(facts, pool, pv, now, cooling, lat)
            assert flat(a) == flat(b), (trial, facts)
            checked += 1
    print(f"identical decisions in {checked} random cases")
    for n in (10, 100, 1000, 10_000):
        pool, pv = world(n, random.Random(n))
        facts = RequestFacts(model="auto", mode="chat", prompt_tokens=300, requested_output_tokens=256,
                             expected_output_tokens=256, capabilities=frozenset(), constraints=Constraints())
        now = datetime.now(timezone.utc)
        res = []
        for fn in (routing.rank, routing_fast.rank):
            fn(facts, pool, pv, now)
            k, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.7 and k < 100_000:
                fn(facts, pool, pv, now)
                k += 1
            res.append((time.perf_counter() - t0) / k * 1e6)
        print(f"{n:>6} deployments: current {res[0]:9.1f} us, proposed {res[1]:9.1f} us ({res[0] / res[1]:.2f}x)")


if __name__ == "__main__":
    main()
