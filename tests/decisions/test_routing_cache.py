"""Ranking with prompt caches (contract 4): expected cost counts the expected cached and cache-write tokens; a warm
deployment wins exactly when that makes it cheaper, and wins ties. Both router paths (integer fast path and the
Decimal reference path) agree with `expected_cost()`."""

from __future__ import annotations

import pickle
from datetime import datetime, time, timezone
from decimal import Decimal

import pytest

from gateway.decisions.pricing import expected_cost, unit_prices
from gateway.decisions.routing import Candidate, rank
from gateway.domain import Constraints, Deployment, OffPeakWindow, Price, PriceVersion, RequestFacts

D = Decimal
UTC = timezone.utc
NOON = datetime(2024, 5, 22, 12, 0, tzinfo=UTC)
WARM = ("warm", "m")
COLD = ("cold", "m")


def dep(key: tuple[str, str], quality: int = 80) -> Deployment:
    return Deployment(key[0], key[1], key[1], 128_000, 4096, quality, frozenset())


def facts(prompt: int = 10_000, out: int = 200, **constraints: object) -> RequestFacts:
    return RequestFacts("auto", "chat", prompt, out, out, frozenset(), Constraints(**constraints))  # type: ignore


def version(prices: dict[tuple[str, str], Price], fx: dict[str, Decimal] | None = None) -> PriceVersion:
    return PriceVersion(1, datetime(2024, 5, 1, tzinfo=UTC), "CNY", fx or {"USD": D("7.10")}, prices)


def price(inp: str, cached: str | None = None, out: str = "2", currency: str = "CNY", write: str | None = None,
          per: int = 1_000_000) -> Price:
    return Price(currency, per, D(inp), D(out), D(cached) if cached else None, cache_write=D(write) if write else None)


def names(decision: object) -> list[str]:
    return [c.deployment.provider for c in decision.candidates]  # type: ignore[attr-defined]


def warm_cost(p: Price, f: RequestFacts, cached: int, write: int = 0, fx: Decimal = D(1)) -> Decimal:
    return expected_cost(unit_prices(p, f.prompt_tokens, NOON), f.prompt_tokens, f.expected_output_tokens, fx,
                         cached_tokens=cached, cache_write_tokens=write)


# (id, warm price, cold price, cached tokens of the warm one, winner)
# 10,000 prompt tokens, 200 output; warm: 8,000 tokens cached.
CASES = [
    # warm 2/M with 8,000 cached at 0.2: 2,000*2 + 8,000*0.2 = 5,600 (+400 out) vs cold 1.9/M: 19,000 (+400)
    ("warm beats a slightly cheaper cold one", price("2", "0.2"), price("1.9", "0.19"), 8_000, "warm"),
    # cold at 0.5/M: 5,000 + 400 < warm 5,600 + 400: the cache does not save enough
    ("a much cheaper cold one beats the warm cache", price("2", "0.2"), price("0.5", "0.05"), 8_000, "cold"),
    # 2,000*2 + 8,000*0.2 = 5,600 == cold 0.56/M * 10,000 = 5,600: the tie goes to the warm one
    ("ties go to the warm one", price("2", "0.2"), price("0.56", "0.056"), 8_000, "warm"),
    # warm with no cache discount (cached price == input) and equal list price: a tie, the warm one first
    ("equal prices, warm first", price("1", "1"), price("1", "1"), 8_000, "warm"),
    # no expected hits: list prices decide
    ("cold wins without hits", price("2", "0.2"), price("1.9", "0.19"), 0, "cold"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("usd", [False, True], ids=["cny", "usd-fx"])
def test_warm_wins_exactly_when_its_expected_cost_is_lower(case: tuple, usd: bool) -> None:
    _, pw, pc, cached, winner = case
    if usd:  # the same race in USD at 7.10: FX scales both sides
        pw = Price("USD", pw.per, pw.input, pw.output, pw.cached_input)
        pc = Price("USD", pc.per, pc.input, pc.output, pc.cached_input)
    f = facts()
    pv = version({WARM: pw, COLD: pc})
    warm = {WARM: (cached, 0)} if cached else {}
    # the cold one is first in static order (same quality, provider name "cold" < "warm")
    d = rank(f, [dep(COLD), dep(WARM)], pv, NOON, warm=warm)
    assert names(d)[0] == winner
    fx = D("7.10") if usd else D(1)
    by = {c.deployment.provider: c for c in d.candidates}
    assert by["warm"].expected_cost == warm_cost(pw, f, cached, fx=fx)
    assert by["warm"].cold_cost == warm_cost(pw, f, 0, fx=fx)
    assert by["warm"].expected_cached_tokens == cached
    assert by["cold"].expected_cost == by["cold"].cold_cost == warm_cost(pc, f, 0, fx=fx)
    assert by["cold"].expected_cached_tokens == 0


def test_explicit_cache_writes_are_priced_at_cache_write() -> None:
    f = facts()
    anthropic = price("3", "0.3", write="3.75")
    other = price("3.05", "3.05")
    pv = version({WARM: anthropic, COLD: other})
    # Writing 8,000 tokens at 3.75 costs more than the 0.05/M list difference: the other one wins ...
    d = rank(f, [dep(COLD), dep(WARM)], pv, NOON, warm={WARM: (0, 8_000)})
    assert names(d) == ["cold", "warm"]
    assert d.candidates[1].expected_cost == warm_cost(anthropic, f, 0, 8_000)
    assert d.candidates[1].expected_cache_write_tokens == 8_000
    # ... and reading them back next turn makes it the cheaper one.
    d = rank(f, [dep(COLD), dep(WARM)], pv, NOON, warm={WARM: (8_000, 1_000)})
    assert names(d) == ["warm", "cold"]
    assert d.candidates[0].expected_cost == warm_cost(anthropic, f, 8_000, 1_000)


def test_the_fast_and_reference_paths_agree_with_many_deployments() -> None:
    f = facts(20_000, 300)
    pool = [dep((f"p{i}", "m"), quality=60 + i % 7) for i in range(60)]
    prices = {d.key: price(str(D(10 + i % 9) / 10), str(D(1 + i % 5) / 10)) for i, d in enumerate(pool)}
    # a price with more digits than the integers may hold exactly in the context's precision: the reference path
    # is taken for the whole decision
    ref_prices = dict(prices)
    ref_prices[pool[0].key] = price("1.000000000000000000000001", "0.1")
    warm = {pool[i].key: (15_000 - 100 * i, 0) for i in range(0, 60, 7)}
    fast = rank(f, pool, version(prices), NOON, warm=warm)
    for c in fast.candidates:
        cached = warm.get(c.deployment.key, (0, 0))[0]
        assert c.expected_cost == warm_cost(prices[c.deployment.key], f, cached)
    costs = [(c.expected_cost, c.expected_cached_tokens == 0, -c.deployment.quality) for c in fast.candidates]
    assert costs == sorted(costs)
    slow = rank(f, pool[1:] + [pool[0]], version(ref_prices), NOON, warm=warm)
    assert ([c for c in slow.candidates if c.deployment != pool[0]]
            == [c for c in fast.candidates if c.deployment != pool[0]])


def test_tiers_and_off_peak_apply_to_warm_deployments() -> None:
    f = facts(10_000, 200)
    night = OffPeakWindow(time(0, 0), time(0, 0), "UTC", D("0.5"), D("1"), D("0.05"))  # always in force
    pw = Price("CNY", 1_000_000, D(2), D(4), D("0.2"), off_peak=(night,))
    pc = price("0.6", "0.06")
    d = rank(f, [dep(COLD), dep(WARM)], version({WARM: pw, COLD: pc}), NOON, warm={WARM: (8_000, 0)})
    assert names(d) == ["warm", "cold"]
    assert d.candidates[0].expected_cost == warm_cost(pw, f, 8_000)
    assert d.candidates[0].unit_prices.window is not None


def test_max_cost_counts_the_cache() -> None:
    f = facts(10_000, 0)
    pv = version({WARM: price("2", "0.2"), COLD: price("1.9", "0.19")})
    # cold: 0.019 CNY; warm with 8,000 cached: 0.0056
    d = rank(f, [dep(COLD), dep(WARM)], pv, NOON, warm={WARM: (8_000, 0)}, )
    assert [c.expected_cost for c in d.candidates] == [D("0.0056"), D("0.019")]
    limited = rank(facts(10_000, 0, max_cost=D("0.01")), [dep(COLD), dep(WARM)], pv, NOON, warm={WARM: (8_000, 0)})
    assert names(limited) == ["warm"] and [e.reason for e in limited.excluded] == ["max_cost"]


def test_warm_ties_break_by_quality_then_latency() -> None:
    a, b, c = ("a", "m"), ("b", "m"), ("c", "m")
    pool = [dep(a, 80), dep(b, 90), dep(c, 90)]
    pv = version({k: price("1", "0.1") for k in (a, b, c)})
    warm = {a: (5_000, 0), b: (5_000, 0), c: (5_000, 0)}
    d = rank(facts(), pool, pv, NOON, latency={b: 0.9, c: 0.1}, warm=warm)
    assert names(d) == ["c", "b", "a"]


def test_candidates_with_cache_predictions_pickle_and_compare() -> None:
    pv = version({WARM: price("2", "0.2"), COLD: price("1.9", "0.19")})
    d = rank(facts(), [dep(COLD), dep(WARM)], pv, NOON, warm={WARM: (8_000, 0)})
    c = d.candidates[0]
    back = pickle.loads(pickle.dumps(c))
    assert back == c and back.cold_cost == c.cold_cost and back.expected_cached_tokens == 8_000
    assert "expected_cached_tokens=8000" in repr(c)
    assert isinstance(c, Candidate) and c != d.candidates[1]


def test_no_warm_map_is_the_list_price_ranking() -> None:
    pool = [dep(COLD), dep(WARM)]
    pv = version({WARM: price("2", "0.2"), COLD: price("1.9", "0.19")})
    assert rank(facts(), pool, pv, NOON) == rank(facts(), pool, pv, NOON, warm={})
    assert rank(facts(), pool, pv, NOON) == rank(facts(), pool, pv, NOON, warm={("gone", "x"): (5, 0)})
