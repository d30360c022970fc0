"""The router as a pure function: eligibility (contract 4), each exclusion with its reason, ranking and tie-breaks."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timezone
from decimal import Decimal

import pytest

from gateway.decisions import routing as R
from gateway.decisions.routing import explain, rank
from gateway.domain import Constraints, Deployment, OffPeakWindow, Price, PriceVersion, RequestFacts, Tier

D = Decimal
UTC = timezone.utc
NOON = datetime(2024, 5, 22, 12, 0, tzinfo=UTC)


def dep(
    provider: str = "p",
    model: str = "m",
    *,
    context_window: int = 32_000,
    max_output_tokens: int | None = 4_096,
    quality: int = 80,
    capabilities: tuple[str, ...] = (),
    mode: str = "chat",
) -> Deployment:
    return Deployment(provider, model, model, context_window, max_output_tokens, quality, frozenset(capabilities),
                      mode)  # type: ignore[arg-type]


def cny(inp: str, out: str, per: int = 1_000) -> Price:
    return Price("CNY", per, D(inp), D(out))


def book(prices: dict, fx: dict | None = None) -> PriceVersion:
    return PriceVersion(1, datetime(2024, 5, 1, tzinfo=UTC), "CNY", fx if fx is not None else {"USD": D("7.10")},
                        prices)


def facts(
    prompt: int = 1_000,
    *,
    requested: int | None = None,
    expected: int | None = None,
    capabilities: tuple[str, ...] = (),
    mode: str = "chat",
    **constraints: object,
) -> RequestFacts:
    return RequestFacts(
        model="auto",
        mode=mode,  # type: ignore[arg-type]
        prompt_tokens=prompt,
        requested_output_tokens=requested,
        expected_output_tokens=expected if expected is not None else (requested if requested is not None else 256),
        capabilities=frozenset(capabilities),
        constraints=Constraints(**constraints),  # type: ignore[arg-type]
    )


def order(decision: R.Decision) -> list[str]:
    return [f"{c.deployment.provider}/{c.deployment.model}" for c in decision.candidates]


# ---- eligibility: one row per rule; each pair is (eligible case, excluded case) ------------------------------------

# (id, deployment, request facts, cooling providers, expected reason or None, words the detail must contain)
ELIGIBILITY = [
    ("context-fits-exactly", dep(context_window=2_000), facts(1_744, requested=256), (), None, ()),
    ("context-counts-expected-output", dep(context_window=2_000), facts(1_745, requested=256), (),
     R.CONTEXT_LENGTH, ("2001", "1745 prompt", "256 output", "2000")),
    ("context-counts-default-output", dep(context_window=2_000), facts(1_800, expected=256), (),
     R.CONTEXT_LENGTH, ("2056", "2000")),
    ("max-output-equal", dep(max_output_tokens=4_096), facts(10, requested=4_096), (), None, ()),
    ("max-output-over", dep(max_output_tokens=4_096), facts(10, requested=4_097), (),
     R.MAX_OUTPUT, ("4097", "4096")),
    ("max-output-unset-request", dep(max_output_tokens=100), facts(10, expected=256), (), None, ()),
    ("max-output-unlimited-deployment", dep(max_output_tokens=None), facts(10, requested=8_000), (), None, ()),
    ("min-quality-equal", dep(quality=85), facts(min_quality=85), (), None, ()),
    ("min-quality-below", dep(quality=84), facts(min_quality=85), (), R.QUALITY, ("84", "85")),
    ("min-context-equal", dep(context_window=128_000), facts(min_context=128_000), (), None, ()),
    ("min-context-below", dep(context_window=127_999), facts(min_context=128_000), (),
     R.MIN_CONTEXT, ("127999", "128000")),
    ("tools-present", dep(capabilities=("tools",)), facts(capabilities=("tools",)), (), None, ()),
    ("tools-missing", dep(capabilities=("json_mode",)), facts(capabilities=("tools",)), (), R.CAPABILITY, ("tools",)),
    ("json-missing", dep(capabilities=("tools",)), facts(capabilities=("json_mode",)), (),
     R.CAPABILITY, ("json_mode",)),
    ("vision-missing", dep(), facts(capabilities=("vision", "tools")), (), R.CAPABILITY, ("tools", "vision")),
    ("all-capabilities", dep(capabilities=("tools", "json_mode", "vision")),
     facts(capabilities=("tools", "json_mode", "vision")), (), None, ()),
    ("provider-allowed", dep(provider="deepseek"), facts(providers=frozenset({"deepseek", "zhipu"})), (), None, ()),
    ("provider-not-allowed", dep(provider="hunyuan"), facts(providers=frozenset({"deepseek", "zhipu"})), (),
     R.PROVIDER_NOT_ALLOWED, ("hunyuan",)),
    ("empty-allow-list", dep(provider="deepseek"), facts(providers=frozenset()), (), R.PROVIDER_NOT_ALLOWED,
     ("deepseek",)),
    ("other-provider-cooling", dep(provider="deepseek"), facts(), ("zhipu",), None, ()),
    ("cooling-down", dep(provider="deepseek"), facts(), ("deepseek",), R.COOLING_DOWN, ("deepseek", "cooling")),
    ("mode-chat-vs-embedding", dep(mode="embedding"), facts(mode="chat"), (), R.MODE, ("embedding", "chat")),
    ("mode-embedding-vs-chat", dep(mode="chat"), facts(mode="embedding", expected=0), (), R.MODE,
     ("chat", "embedding")),
    ("mode-embedding-ok", dep(mode="embedding"), facts(mode="embedding", expected=0), (), None, ()),
]


@pytest.mark.parametrize(
    ("deployment", "request_facts", "cooling", "reason", "detail_words"),
    [row[1:] for row in ELIGIBILITY],
    ids=[row[0] for row in ELIGIBILITY],
)
def test_each_eligibility_rule_excludes_with_its_reason_and_detail(
    deployment: Deployment, request_facts: RequestFacts, cooling: tuple[str, ...], reason: str | None,
    detail_words: tuple[str, ...],
) -> None:
    decision = rank(request_facts, [deployment], book({deployment.key: cny("0.001", "0.002")}), NOON,
                    frozenset(cooling))
    if reason is None:
        assert order(decision) == [f"{deployment.provider}/{deployment.model}"]
        assert decision.excluded == ()
    else:
        assert decision.candidates == ()
        (ex,) = decision.excluded
        assert ex.deployment == deployment
        assert ex.reason == reason
        for word in detail_words:
            assert word in ex.detail
        assert ex.describe().startswith(f"{deployment.provider}/{deployment.model}: ")


def test_embedding_requests_do_not_count_output_against_the_context_window() -> None:
    d = dep(mode="embedding", context_window=2_048)
    decision = rank(facts(2_048, mode="embedding", expected=256), [d], book({d.key: cny("0.0007", "0")}), NOON)
    assert order(decision) == ["p/m"]


# max_cost: expected cost of 1,000 prompt tokens at 0.001/1K + 256 output tokens at 0.002/1K = 0.001512 CNY
@pytest.mark.parametrize(
    ("max_cost", "eligible"),
    [("1", True), ("0.001512", True), ("0.0015120", True), ("0.001511", False), ("0", False)],
)
def test_max_cost_is_inclusive(max_cost: str, eligible: bool) -> None:
    d = dep()
    decision = rank(facts(1_000, expected=256, max_cost=D(max_cost)), [d], book({d.key: cny("0.001", "0.002")}), NOON)
    if eligible:
        assert [c.expected_cost for c in decision.candidates] == [D("0.001512")]
    else:
        (ex,) = decision.excluded
        assert ex.reason == R.MAX_COST
        assert "0.001512" in ex.detail and max_cost in ex.detail


def test_max_cost_is_compared_in_the_reporting_currency() -> None:
    d = dep("openai", "gpt-4o")
    usd = Price("USD", 1_000_000, D("5"), D("15"))
    # 1,000 x 5/1M + 1,000 x 15/1M = 0.02 USD = 0.142 CNY
    ok = rank(facts(1_000, expected=1_000, max_cost=D("0.142")), [d], book({d.key: usd}), NOON)
    too_dear = rank(facts(1_000, expected=1_000, max_cost=D("0.1419")), [d], book({d.key: usd}), NOON)
    assert [c.expected_cost for c in ok.candidates] == [D("0.142")]
    assert [e.reason for e in too_dear.excluded] == [R.MAX_COST]


def test_deployment_missing_from_the_price_table_is_excluded_as_no_price() -> None:
    d = dep()
    decision = rank(facts(), [d], book({}), NOON)
    assert [(e.reason, e.detail) for e in decision.excluded] == [(R.NO_PRICE, "no price in the live price table")]


def test_every_excluded_deployment_is_reported_and_explained() -> None:
    a, b, c = dep("a", "small", context_window=1_000), dep("b", "weak", quality=10), dep("c", "ok")
    prices = book({x.key: cny("0.001", "0.002") for x in (a, b, c)})
    decision = rank(facts(2_000, min_quality=50), [a, b, c], prices, NOON)
    assert order(decision) == ["c/ok"]
    assert [(e.deployment.model, e.reason) for e in decision.excluded] == [("small", R.CONTEXT_LENGTH),
                                                                             ("weak", R.QUALITY)]
    text = explain(decision)
    assert "a/small: needs 2256 tokens" in text and "b/weak: quality 10 < min_quality 50" in text


# ---- Decision.all_context_length ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "request_facts", "expected"),
    [
        ([dep("a", "x", context_window=1_000), dep("b", "y", context_window=2_000)], facts(5_000), True),
        ([dep("a", "x", context_window=1_000), dep("b", "y", quality=1)], facts(5_000, min_quality=50), False),
        ([dep("a", "x", context_window=1_000)], facts(100), False),  # nothing excluded
        ([], facts(100), False),
    ],
    ids=["all-context", "mixed-reasons", "none-excluded", "empty-pool"],
)
def test_all_context_length_only_when_context_excluded_every_deployment(
    pool: list[Deployment], request_facts: RequestFacts, expected: bool
) -> None:
    decision = rank(request_facts, pool, book({d.key: cny("0.001", "0.002") for d in pool}), NOON)
    assert decision.all_context_length is expected



def test_all_context_length_is_false_when_some_deployment_fits() -> None:
    small, big = dep("a", "small", context_window=1_000), dep("b", "big", context_window=128_000)
    decision = rank(facts(5_000), [small, big], book({d.key: cny("0.001", "0.002") for d in (small, big)}), NOON)
    assert order(decision) == ["b/big"]
    assert decision.all_context_length is False


# ---- ranking by expected cost ---------------------------------------------------------------------------------------

CHEAP_IN = dep("cheapin", "m")  # cheap input, dear output
CHEAP_OUT = dep("cheapout", "m")  # dear input, cheap output
IN_OUT_PRICES = book({CHEAP_IN.key: cny("0.0005", "0.02"), CHEAP_OUT.key: cny("0.004", "0.002")})


@pytest.mark.parametrize(
    ("prompt", "output", "winner", "costs"),
    [
        # 20,000 x 0.0005 + 100 x 0.02 = 0.012 ; 20,000 x 0.004 + 100 x 0.002 = 0.0802 (per 1K)
        (20_000, 100, "cheapin/m", ("0.012", "0.0802")),
        # 100 x 0.0005 + 4,000 x 0.02 = 0.08005 ; 100 x 0.004 + 4,000 x 0.002 = 0.0084
        (100, 4_000, "cheapout/m", ("0.0084", "0.08005")),
    ],
    ids=["long-prompt-short-output", "short-prompt-long-output"],
)
def test_ranking_weighs_input_and_output_prices_by_their_token_counts(
    prompt: int, output: int, winner: str, costs: tuple[str, str]
) -> None:
    decision = rank(facts(prompt, requested=output), [CHEAP_IN, CHEAP_OUT], IN_OUT_PRICES, NOON)
    assert order(decision)[0] == winner
    assert [c.expected_cost for c in decision.candidates] == [D(x) for x in costs]


def test_ranking_uses_the_default_expected_output_when_max_tokens_is_absent() -> None:
    # expected 4,000 output tokens (the configured default), nothing requested: output price dominates
    decision = rank(facts(100, expected=4_000), [CHEAP_IN, CHEAP_OUT], IN_OUT_PRICES, NOON)
    assert order(decision) == ["cheapout/m", "cheapin/m"]


def test_ranking_uses_the_tier_of_the_estimated_prompt() -> None:
    tiered = dep("dashscope", "qwen-plus", context_window=131_072)
    flat = dep("flat", "m", context_window=131_072)
    tiers = Price("CNY", 1_000_000, D("0.8"), D("2"),
                  tiers=(Tier(32_000, D("0.8"), D("2")), Tier(128_000, D("2.4"), D("20"))))
    prices = book({tiered.key: tiers, flat.key: cny("1.5", "10", per=1_000_000)})
    short = rank(facts(31_000, expected=0), [tiered, flat], prices, NOON)
    long = rank(facts(33_000, expected=0), [tiered, flat], prices, NOON)
    assert order(short)[0] == "dashscope/qwen-plus" and short.candidates[0].unit_prices.tier == 32_000
    assert order(long)[0] == "flat/m" and long.candidates[1].unit_prices.tier == 128_000


# ---- tie-breaks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "latency", "expected"),
    [
        # same cost: higher quality first
        ([dep("a", "m", quality=70), dep("b", "m", quality=90)], {}, ["b/m", "a/m"]),
        # same cost and quality: lower recent latency first
        ([dep("a", "m"), dep("b", "m")], {("a", "m"): 0.9, ("b", "m"): 0.2}, ["b/m", "a/m"]),
        # quality beats latency
        ([dep("a", "m", quality=90), dep("b", "m", quality=80)], {("a", "m"): 5.0, ("b", "m"): 0.1}, ["a/m", "b/m"]),
        # a known latency ranks before an unknown one
        ([dep("a", "m"), dep("b", "m")], {("b", "m"): 3.0}, ["b/m", "a/m"]),
    ],
    ids=["quality", "latency", "quality-before-latency", "unknown-latency-last"],
)
def test_equal_cost_ties_break_by_quality_then_latency(
    pool: list[Deployment], latency: dict, expected: list[str]
) -> None:
    prices = book({d.key: cny("0.001", "0.002") for d in pool})
    assert order(rank(facts(), pool, prices, NOON, latency=latency)) == expected
    assert order(rank(facts(), list(reversed(pool)), prices, NOON, latency=latency)) == expected


def test_cost_beats_quality_and_latency() -> None:
    good, cheap = dep("good", "m", quality=99), dep("cheap", "m", quality=1)
    prices = book({good.key: cny("0.0011", "0.002"), cheap.key: cny("0.001", "0.002")})
    assert order(rank(facts(), [good, cheap], prices, NOON, latency={good.key: 0.01, cheap.key: 9.0})) == [
        "cheap/m", "good/m"]


def test_full_ties_have_a_stable_order_independent_of_pool_order() -> None:
    pool = [dep("b", "y"), dep("a", "z"), dep("a", "x"), dep("c", "w")]
    prices = book({d.key: cny("0.001", "0.002") for d in pool})
    expected = ["a/x", "a/z", "b/y", "c/w"]
    assert order(rank(facts(), pool, prices, NOON)) == expected
    assert order(rank(facts(), list(reversed(pool)), prices, NOON)) == expected


def test_candidate_carries_its_latency_and_unit_prices() -> None:
    d = dep()
    (c,) = rank(facts(), [d], book({d.key: cny("0.001", "0.002")}), NOON, latency={d.key: 0.25}).candidates
    assert c.recent_latency_s == 0.25
    assert (c.unit_prices.input, c.unit_prices.output, c.unit_prices.currency) == (D("0.001"), D("0.002"), "CNY")


# ---- off-peak, free models, FX --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "winner"),
    [
        (datetime(2024, 5, 22, 12, 0, tzinfo=UTC), "glm/m"),  # peak: v3 costs 2/8 per 1M
        (datetime(2024, 5, 22, 16, 29, tzinfo=UTC), "glm/m"),
        (datetime(2024, 5, 22, 16, 30, tzinfo=UTC), "deepseek/v3"),  # off-peak: 0.5/2 per 1M
        (datetime(2024, 5, 23, 0, 29, tzinfo=UTC), "deepseek/v3"),
        (datetime(2024, 5, 23, 0, 30, tzinfo=UTC), "glm/m"),
    ],
)
def test_off_peak_pricing_changes_the_winner_depending_on_now(now: datetime, winner: str) -> None:
    v3, glm = dep("deepseek", "v3"), dep("glm", "m")
    v3_price = Price("CNY", 1_000_000, D("2"), D("8"), off_peak=(
        OffPeakWindow(time(16, 30), time(0, 30), "UTC", D("0.5"), D("2")),))
    prices = book({v3.key: v3_price, glm.key: cny("1.5", "1.5", per=1_000_000)})  # 3 vs 10 peak, 2.5 off
    assert order(rank(facts(1_000, expected=1_000), [v3, glm], prices, now))[0] == winner


def test_free_model_wins_and_costs_zero() -> None:
    free, paid = dep("qianfan", "ernie-speed-128k", quality=60), dep("deepseek", "deepseek-v2", quality=86)
    prices = book({free.key: cny("0", "0"), paid.key: cny("0.001", "0.002")})
    decision = rank(facts(5_000, expected=500), [paid, free], prices, NOON)
    assert order(decision) == ["qianfan/ernie-speed-128k", "deepseek/deepseek-v2"]
    assert decision.candidates[0].expected_cost == 0


@pytest.mark.parametrize(
    ("fx", "expected"),
    [
        # 1,000 in + 1,000 out at 0.5/1.5 USD per 1M = 0.002 USD; x 7.10 = 0.0142 CNY: between 0.0101 and 0.02
        (D("7.10"), ["cny/cheap", "openai/mini", "cny/dear"]),
        # a strong dollar: 0.002 x 20 = 0.04 CNY, dearer than both
        (D("20"), ["cny/cheap", "cny/dear", "openai/mini"]),
        # a weak one: 0.002 x 1 = 0.002 CNY, cheapest
        (D("1"), ["openai/mini", "cny/cheap", "cny/dear"]),
    ],
)
def test_fx_converts_a_usd_deployment_before_comparing_with_cny_ones(fx: Decimal, expected: list[str]) -> None:
    usd, cheap, dear = dep("openai", "mini"), dep("cny", "cheap"), dep("cny", "dear")
    prices = book({
        usd.key: Price("USD", 1_000_000, D("0.5"), D("1.5")),
        cheap.key: cny("0.0001", "0.01"),  # 0.0001 + 0.01 = 0.0101 CNY
        dear.key: cny("0.01", "0.01"),  # 0.02 CNY
    }, fx={"USD": fx})
    decision = rank(facts(1_000, expected=1_000), [dear, usd, cheap], prices, NOON)
    assert order(decision) == expected
    by_name = {f"{c.deployment.provider}/{c.deployment.model}": c.expected_cost for c in decision.candidates}
    assert by_name["openai/mini"] == D("0.002") * fx


# ---- Constraints.merged ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "request_", "expected"),
    [
        (Constraints(), Constraints(), Constraints()),
        (Constraints(min_quality=85), Constraints(), Constraints(min_quality=85)),
        (Constraints(), Constraints(min_quality=85), Constraints(min_quality=85)),
        (Constraints(min_quality=85), Constraints(min_quality=70), Constraints(min_quality=85)),
        (Constraints(min_quality=70), Constraints(min_quality=85), Constraints(min_quality=85)),
        (Constraints(min_context=128_000), Constraints(min_context=32_000), Constraints(min_context=128_000)),
        (Constraints(min_context=8_000), Constraints(min_context=32_000), Constraints(min_context=32_000)),
        (Constraints(providers=frozenset({"a", "b"})), Constraints(providers=frozenset({"b", "c"})),
         Constraints(providers=frozenset({"b"}))),
        (Constraints(providers=frozenset({"a"})), Constraints(), Constraints(providers=frozenset({"a"}))),
        (Constraints(), Constraints(providers=frozenset({"c"})), Constraints(providers=frozenset({"c"}))),
        (Constraints(providers=frozenset({"a"})), Constraints(providers=frozenset({"c"})),
         Constraints(providers=frozenset())),
        (Constraints(max_cost=D("0.5")), Constraints(max_cost=D("0.1")), Constraints(max_cost=D("0.1"))),
        (Constraints(max_cost=D("0.1")), Constraints(max_cost=D("0.5")), Constraints(max_cost=D("0.1"))),
        (Constraints(max_cost=D("0.1")), Constraints(), Constraints(max_cost=D("0.1"))),
        (Constraints(min_quality=0), Constraints(), Constraints(min_quality=0)),
    ],
)
def test_constraints_merged_takes_the_stricter_of_route_and_request(
    route: Constraints, request_: Constraints, expected: Constraints
) -> None:
    assert route.merged(request_) == expected


def test_merged_constraints_route_min_quality_cannot_be_loosened_by_the_request() -> None:
    weak, strong = dep("a", "weak", quality=70), dep("b", "strong", quality=90)
    merged = Constraints(min_quality=85).merged(Constraints(min_quality=10))
    decision = rank(replace(facts(), constraints=merged), [weak, strong],
                    book({weak.key: cny("0", "0"), strong.key: cny("0.001", "0.002")}), NOON)
    assert order(decision) == ["b/strong"]
    assert [e.reason for e in decision.excluded] == [R.QUALITY]


# ---- equivalence with the reference implementation -----------------------------------------------------------------
#
# rank() prepares prices once per price version and computes flat costs in integers (issue 8). _reference_rank is the
# straightforward implementation it replaced, kept here verbatim in substance: over random pools, prices (flat,
# tiered, off-peak in several zones, per 1K / 1M / other, free, USD and CNY, a missing FX rate), constraints,
# cooling providers and latencies, both must give the same decision: same candidates in the same order with the same
# Decimal costs digit for digit (compared as text), the same unit prices and latencies, the same exclusions with the
# same reasons and details, or the same exception.

import random  # noqa: E402

from gateway.decisions.pricing import expected_cost as _expected_cost  # noqa: E402
from gateway.decisions.pricing import unit_prices as _unit_prices  # noqa: E402


def _reference_exclusion(d: Deployment, f: RequestFacts, cooling: frozenset[str]) -> tuple[str, str] | None:
    c = f.constraints
    if d.mode != f.mode:
        return R.MODE, f"serves {d.mode}, not {f.mode}"
    if c.providers is not None and d.provider not in c.providers:
        return R.PROVIDER_NOT_ALLOWED, f"provider {d.provider} not in allowed providers"
    needed = f.prompt_tokens + (f.expected_output_tokens if f.mode == "chat" else 0)
    if needed > d.context_window:
        return (R.CONTEXT_LENGTH, f"needs {needed} tokens ({f.prompt_tokens} prompt + {needed - f.prompt_tokens} "
                f"output), context window is {d.context_window}")
    out = f.requested_output_tokens
    if out is not None and d.max_output_tokens is not None and out > d.max_output_tokens:
        return R.MAX_OUTPUT, f"requested {out} output tokens, max_output_tokens is {d.max_output_tokens}"
    if c.min_context is not None and d.context_window < c.min_context:
        return R.MIN_CONTEXT, f"context window {d.context_window} < min_context {c.min_context}"
    if c.min_quality is not None and d.quality < c.min_quality:
        return R.QUALITY, f"quality {d.quality} < min_quality {c.min_quality}"
    missing = f.capabilities - d.capabilities
    if missing:
        return R.CAPABILITY, f"lacks {', '.join(sorted(missing))}"
    if d.provider in cooling:
        return R.COOLING_DOWN, f"provider {d.provider} is cooling down after failures"
    return None


def _reference_rank(f: RequestFacts, pool: list[Deployment], prices: PriceVersion, now: datetime,
                    cooling: frozenset[str] = frozenset(), latency: dict | None = None) -> tuple:
    latency = latency or {}
    ranked, excluded = [], []
    max_cost = f.constraints.max_cost
    for d in pool:
        why = _reference_exclusion(d, f, cooling)
        if why is not None:
            excluded.append((d, *why))
            continue
        price = prices.prices.get(d.key)
        if price is None:
            excluded.append((d, R.NO_PRICE, "no price in the live price table"))
            continue
        up = _unit_prices(price, f.prompt_tokens, now)
        cost = _expected_cost(up, f.prompt_tokens, f.expected_output_tokens, prices.fx(up.currency))
        if max_cost is not None and cost > max_cost:
            excluded.append((d, R.MAX_COST, f"expected cost {cost} > max_cost {max_cost}"))
            continue
        lat = latency.get(d.key)
        ranked.append((cost, -d.quality, lat if lat is not None else float("inf"), d.provider, d.model,
                       (d, str(cost), up, lat)))
    ranked.sort(key=lambda r: r[:5])
    return tuple(r[5] for r in ranked), tuple(excluded)


def _as_plain(decision: R.Decision) -> tuple:
    return (tuple((c.deployment, str(c.expected_cost), c.unit_prices, c.recent_latency_s) for c in decision.candidates),
            tuple((e.deployment, e.reason, e.detail) for e in decision.excluded))


def _random_world(rnd: random.Random, n: int) -> tuple[list[Deployment], PriceVersion]:
    pool = [Deployment(f"p{rnd.randint(0, 6)}", f"m{i}", f"m{i}", rnd.choice((2_000, 8_000, 32_000, 128_000)),
                       rnd.choice((None, 1_024, 4_096)), rnd.randint(40, 95),
                       frozenset(rnd.sample(["tools", "json_mode", "vision"], rnd.randint(0, 3))),
                       rnd.choice(("chat", "chat", "chat", "embedding")))
            for i in range(n)]
    if pool and rnd.random() < 0.2:
        pool.append(pool[0])  # the same deployment twice
    if pool and rnd.random() < 0.2:
        pool.append(replace(pool[-1], quality=pool[-1].quality + 1))  # the same key, another object
    prices: dict = {}
    digits = ("0", "0.0001", "0.0005", "0.00123", "0.001", "0.002", "0.0150", "0.5", "2", "8", "12.50", "0.14")
    for d in pool:
        if rnd.random() < 0.05:
            continue  # no price
        kw: dict = {}
        if rnd.random() < 0.25:
            kw["tiers"] = tuple(Tier(up_to, D(rnd.choice(digits)), D(rnd.choice(digits)),
                                     rnd.choice((None, D(rnd.choice(digits)))))
                                for up_to in sorted(rnd.sample((500, 1_000, 8_000, 32_000, 100_000), 2)))
        if rnd.random() < 0.25:
            kw["off_peak"] = tuple(OffPeakWindow(time(rnd.randint(0, 23), rnd.choice((0, 30))),
                                                 time(rnd.randint(0, 23), rnd.choice((0, 30))),
                                                 rnd.choice(("UTC", "Asia/Shanghai", "America/New_York")),
                                                 D(rnd.choice(digits)), D(rnd.choice(digits)))
                                   for _ in range(rnd.randint(1, 2)))
        prices[d.key] = Price(rnd.choice(("CNY", "CNY", "USD", "EUR")), rnd.choice((1_000, 1_000_000, 1_000, 500)),
                              D(rnd.choice(digits)), D(rnd.choice(digits)), rnd.choice((None, D("0.0001"))), **kw)
    fx = {"USD": D(rnd.choice(("7.10", "7.1234", "1", "0.1388888888888888888888")))}
    if rnd.random() < 0.8:
        fx["EUR"] = D("7.8")
    return pool, PriceVersion(1, datetime(2024, 5, 1, tzinfo=UTC), "CNY", fx, prices)


@pytest.mark.parametrize("seed", range(40))
def test_rank_gives_the_decisions_of_the_reference_implementation(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(6):
        pool, pv = _random_world(rnd, rnd.randint(0, 40))
        for _ in range(8):
            requested = rnd.choice((None, 100, 3_000, 5_000))
            mode = rnd.choice(("chat", "chat", "embedding"))
            f = RequestFacts(
                "auto", mode, rnd.choice((0, 1, 10, 700, 1_000, 1_001, 9_000, 40_000, 10**12)), requested,
                requested if requested is not None else rnd.choice((0, 256, 1_000)),
                frozenset(rnd.sample(["tools", "json_mode", "vision"], rnd.randint(0, 2))),
                Constraints(min_quality=rnd.choice((None, 60, 80)), min_context=rnd.choice((None, 30_000)),
                            providers=rnd.choice((None, frozenset({"p1", "p2", "p3"}), frozenset())),
                            max_cost=rnd.choice((None, D("0.01"), D("1"), D("0.0015120")))))
            now = datetime(2024, 5, 1, rnd.randint(0, 23), rnd.choice((0, 29, 30, 59)), tzinfo=UTC)
            cooling = rnd.choice((frozenset(), frozenset({"p4"})))
            lat = {d.key: rnd.choice((0.1, 0.2, rnd.random())) for d in pool if rnd.random() < 0.5}
            try:
                expected: object = _reference_rank(f, pool, pv, now, cooling, lat)
            except Exception as exc:  # a missing FX rate of an eligible deployment
                expected = type(exc)
            try:
                got: object = _as_plain(rank(f, pool, pv, now, cooling, lat))
            except Exception as exc:
                got = type(exc)
            assert got == expected


def test_rank_with_a_tiny_decimal_precision_still_matches_the_reference() -> None:
    import decimal

    rnd = random.Random(99)
    pool, pv = _random_world(rnd, 30)
    f = facts(123_457, expected=98_765)
    with decimal.localcontext() as ctx:
        ctx.prec = 6
        try:
            expected: object = _reference_rank(f, pool, pv, NOON)
        except Exception as exc:
            expected = type(exc)
        try:
            got: object = _as_plain(rank(f, pool, pv, NOON))
        except Exception as exc:
            got = type(exc)
    assert got == expected


def test_exclusions_are_plain_exclusions_and_reused_only_for_the_same_facts() -> None:
    d = dep(quality=50)
    prices = book({d.key: cny("0.001", "0.002")})
    first = rank(facts(min_quality=60), [d], prices, NOON).excluded[0]
    again = rank(facts(min_quality=60), [d], prices, NOON).excluded[0]
    other = rank(facts(min_quality=70), [d], prices, NOON).excluded[0]
    assert type(first) is R.Exclusion and first == again
    assert first.detail == "quality 50 < min_quality 60" and other.detail == "quality 50 < min_quality 70"


def test_a_large_pool_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    pool = [dep("p", f"m{i}") for i in range(600)]
    prices = book({d.key: cny("0.001", "0.002") for d in pool})
    assert gc.isenabled()
    assert len(rank(facts(), pool, prices, NOON).candidates) == 600
    assert gc.isenabled()
    gc.disable()
    try:
        rank(facts(), pool, prices, NOON)
        assert not gc.isenabled()
    finally:
        gc.enable()


# ---- the planned router against the reference, where ties and reuse are the rule ----------------------------------
#
# rank() plans each pool once per price version, looks eligibility up by the few facts it depends on, ranks rows of
# equal price together, breaks ties with latency only where cost and quality are equal, and writes candidates' costs
# and exclusions' texts when first read. These worlds make every one of those paths common: few providers, models,
# qualities and prices (equal costs, equal qualities, shared prices, the same key twice), latencies that tie too,
# the same pool object for many requests (and changed in place), tuples and generators as pools.

from dataclasses import FrozenInstanceError  # noqa: E402
import pickle  # noqa: E402


def _tied_world(rnd: random.Random, n: int) -> tuple[list[Deployment], PriceVersion]:
    providers = [f"p{i}" for i in range(rnd.randint(1, 5))]
    pool = [Deployment(rnd.choice(providers), f"m{rnd.randint(0, max(1, n // 3))}", "u",
                       rnd.choice((2_000, 8_000, 32_000, 128_000)), rnd.choice((None, 1_024, 4_096)),
                       rnd.choice((70, 80, 80, 90)), frozenset(rnd.sample(["tools", "json_mode", "vision"],
                                                                          rnd.randint(0, 2))),
                       rnd.choice(("chat", "chat", "chat", "embedding")))
            for _ in range(n)]
    window = OffPeakWindow(time(rnd.randint(0, 23)), time(rnd.randint(0, 23)),
                           rnd.choice(("UTC", "Asia/Shanghai")), D("0.0005"), D("0.001"))
    palette = [
        Price("CNY", 1_000, D("0.001"), D("0.002")),
        Price("CNY", 1_000_000, D("1"), D("2")),  # the same cost as the first
        Price("USD", 1_000_000, D("0.14"), D("0.28")),
        Price("CNY", 1_000, D("0.0020"), D("0")),
        Price("CNY", 1_000, D("0"), D("0")),
        Price("CNY", 1_000, D("0.002"), D("0.008"), tiers=(Tier(1_000, D("0.001"), D("0.002")),
                                                           Tier(32_000, D("0.004"), D("0.016")))),
        Price("CNY", 1_000, D("0.002"), D("0.004"), off_peak=(window,)),
    ]
    weights = [rnd.random() for _ in palette]
    prices = {d.key: rnd.choices(palette, weights)[0] for d in pool if rnd.random() < 0.97}
    return pool, PriceVersion(1, datetime(2024, 5, 1, tzinfo=UTC), "CNY", {"USD": D("7.10")}, prices)


def _random_facts(rnd: random.Random) -> RequestFacts:
    requested = rnd.choice((None, 100, 2_000))
    return RequestFacts(
        "auto", rnd.choice(("chat", "chat", "embedding")), rnd.choice((0, 1, 700, 1_000, 1_001, 9_000, 40_000)),
        requested, requested if requested is not None else rnd.choice((0, 256, 1_000)),
        frozenset(rnd.sample(["tools", "json_mode", "vision"], rnd.randint(0, 1))),
        Constraints(min_quality=rnd.choice((None, 75, 80)), min_context=rnd.choice((None, 30_000)),
                    providers=rnd.choice((None, frozenset({"p1", "p2"}))),
                    max_cost=rnd.choice((None, None, D("0.002"), D("0.0025")))))


def _check(f: RequestFacts, pool: object, pv: PriceVersion, now: datetime, cooling: frozenset[str],
           lat: dict) -> None:
    plain_pool = list(pool)  # type: ignore[call-overload]
    if iter(pool) is pool:  # type: ignore[call-overload]
        pool = iter(plain_pool)  # an iterator: rank() gets one of its own
    expected = _reference_rank(f, plain_pool, pv, now, cooling, lat)
    decision = rank(f, pool, pv, now, cooling, lat)  # type: ignore[arg-type]
    assert _as_plain(decision) == expected
    assert explain(decision) == "; ".join(f"{d.provider}/{d.model}: {detail}" for d, _, detail in expected[1])
    assert decision.all_context_length == (not expected[0] and bool(expected[1])
                                           and all(r == R.CONTEXT_LENGTH for _, r, _ in expected[1]))


@pytest.mark.parametrize("seed", range(30))
def test_rank_matches_the_reference_where_costs_qualities_and_latencies_tie(seed: int) -> None:
    rnd = random.Random(1_000 + seed)
    for _ in range(4):
        pool, pv = _tied_world(rnd, rnd.choice((1, 5, 30, 80)))
        for _ in range(12):  # the same pool object: plan, eligibility and level memos are reused
            now = datetime(2024, 5, 1, rnd.randint(0, 23), rnd.choice((0, 30)), tzinfo=UTC)
            lat = {d.key: rnd.choice((0.1, 0.2, 0.2, 0.3)) for d in pool if rnd.random() < rnd.choice((0, 0.5, 1))}
            cooling = rnd.choice((frozenset(), frozenset({"p0"})))
            _check(_random_facts(rnd), pool, pv, now, cooling, lat)


@pytest.mark.parametrize("seed", range(3))
def test_rank_matches_the_reference_on_large_pools_of_shared_prices(seed: int) -> None:
    rnd = random.Random(2_000 + seed)
    pool, pv = _tied_world(rnd, 700)  # many rows per price: ranked by price group, with the collector paused
    for _ in range(6):
        lat = {d.key: rnd.choice((0.1, 0.2)) for d in pool if rnd.random() < 0.5} if rnd.random() < 0.5 else {}
        _check(_random_facts(rnd), pool, pv, NOON, frozenset(), lat)


def test_a_pool_changed_in_place_tuples_and_generators_get_their_own_decisions() -> None:
    rnd = random.Random(7)
    pool, pv = _tied_world(rnd, 40)
    f = facts(500)
    _check(f, pool, pv, NOON, frozenset(), {})
    pool.append(dep("p1", "new", quality=99))
    pool[0] = replace(pool[0], quality=1)
    pool.reverse()
    _check(f, pool, pv, NOON, frozenset(), {})
    del pool[5:]
    _check(f, pool, pv, NOON, frozenset(), {})
    _check(f, tuple(pool), pv, NOON, frozenset(), {})
    _check(f, iter(pool), pv, NOON, frozenset(), {})
    # an equal list, another object: equal decisions
    again = [replace(d) for d in pool]
    assert _as_plain(rank(f, again, pv, NOON)) == _reference_rank(f, again, pv, NOON)


def test_candidates_read_their_cost_exactly_whatever_the_context_when_read() -> None:
    import decimal

    usd, cny_ = dep("openai", "mini"), dep("cny", "m")
    pv = book({usd.key: Price("USD", 1_000_000, D("0.15"), D("0.60")), cny_.key: cny("0.0011", "0.0023")},
              fx={"USD": D("7.1234")})
    decision = rank(facts(123_457, expected=98_765), [usd, cny_], pv, NOON)
    (expected, _) = _reference_rank(facts(123_457, expected=98_765), [usd, cny_], pv, NOON)
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        assert [str(c.expected_cost) for c in decision.candidates] == [row[1] for row in expected]


def test_candidates_and_decisions_keep_the_value_semantics_of_frozen_dataclasses() -> None:
    d = dep()
    pv = book({d.key: cny("0.001", "0.002")})
    decision = rank(facts(1_000, expected=256), [d], pv, NOON, latency={d.key: 0.5})
    (c,) = decision.candidates
    same = R.Candidate(d, D("0.001512"), c.unit_prices, 0.5)
    assert c == same and hash(c) == hash(same) and c != R.Candidate(d, D("0.001513"), c.unit_prices, 0.5)
    assert repr(c) == ("Candidate(deployment=" + repr(d) + ", expected_cost=Decimal('0.001512'), unit_prices="
                       + repr(c.unit_prices) + ", recent_latency_s=0.5)")
    assert pickle.loads(pickle.dumps(c)) == c
    with pytest.raises(FrozenInstanceError):
        c.expected_cost = D(0)  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        decision.candidates = ()  # type: ignore[misc]
    assert decision == R.Decision((same,), ())
    excluded = rank(facts(min_quality=90), [d], pv, NOON)
    assert excluded.excluded is excluded.excluded  # written once, when first read
    assert excluded == R.Decision((), (R.Exclusion(d, R.QUALITY, "quality 80 < min_quality 90"),))


def test_sets_where_frozensets_are_expected_give_the_same_decisions() -> None:
    rnd = random.Random(11)
    pool, pv = _tied_world(rnd, 30)
    f = replace(facts(500, capabilities=("tools",)), constraints=Constraints(providers={"p0", "p1"}))  # type: ignore
    expected = _reference_rank(f, pool, pv, NOON, frozenset({"p1"}))
    assert _as_plain(rank(f, pool, pv, NOON, {"p1"})) == expected  # type: ignore[arg-type]
    assert _as_plain(rank(f, pool, pv, NOON, {"p1"})) == expected  # type: ignore[arg-type]
