"""Pricing as pure functions: unit prices in force (tiers, off-peak windows, cached input) and exact costs."""

from __future__ import annotations

from datetime import datetime, time, timezone
from decimal import Decimal

import pytest

from gateway.decisions.pricing import expected_cost, in_window, price_usage, tokens_cost, unit_prices
from gateway.domain import Cost, OffPeakWindow, Price, PriceVersion, Tier, UnitPrices, Usage

D = Decimal
UTC = timezone.utc
NOON = datetime(2024, 5, 22, 12, 0, tzinfo=UTC)


def version(prices: dict | None = None, fx: dict | None = None, reporting: str = "CNY",
            number: int = 7) -> PriceVersion:
    return PriceVersion(
        version=number,
        effective_from=datetime(2024, 5, 22, tzinfo=UTC),
        reporting_currency=reporting,
        fx_rates={"USD": D("7.10")} if fx is None else fx,
        prices=prices or {},
    )


# ---- exact arithmetic ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "unit", "per", "expected"),
    [
        (1_001, "0.0005", 1_000, "0.0005005"),
        (7, "0.0008", 1_000, "0.0000056"),
        (1, "0.002", 1_000, "0.000002"),
        (1_000, "0.001", 1_000, "0.001"),
        (1_000_000, "2", 1_000_000, "2"),
        (1, "2", 1_000_000, "0.000002"),
        (333, "0.8", 1_000_000, "0.0002664"),
        (123_456_789, "0.0045", 1_000, "555.5555505"),
        (0, "0.002", 1_000, "0"),
        (5_000, "0", 1_000, "0"),
    ],
)
def test_tokens_cost_is_exact_decimal_per_1k_and_per_1m(tokens: int, unit: str, per: int, expected: str) -> None:
    cost = tokens_cost(tokens, D(unit), per)
    assert isinstance(cost, Decimal)
    assert cost == D(expected)


def test_same_unit_figure_per_1m_is_a_thousand_times_cheaper_than_per_1k() -> None:
    assert tokens_cost(5_000, D("2"), 1_000) == D("10")
    assert tokens_cost(5_000, D("2"), 1_000_000) == D("0.01")


def test_price_usage_bills_1001_input_tokens_at_exactly_0_0005005() -> None:
    price = Price("CNY", 1_000, D("0.0005"), D("0.002"))
    cost = price_usage(Usage(1_001, 0, 0), price, version(), NOON)
    assert cost.input == D("0.0005005")
    assert cost.total == D("0.0005005")
    assert cost.total_reporting == D("0.0005005")
    assert str(cost.total) == "0.0005005"


# ---- tiers ---------------------------------------------------------------------------------------------------------

TIERED = Price(
    "CNY",
    1_000_000,
    D("0.8"),
    D("2"),
    tiers=(Tier(32_000, D("0.8"), D("2")), Tier(128_000, D("2.4"), D("20")), Tier(1_000_000, D("6"), D("60"))),
)


@pytest.mark.parametrize(
    ("prompt_tokens", "tier", "input_price", "output_price"),
    [
        (0, 32_000, "0.8", "2"),
        (1, 32_000, "0.8", "2"),
        (32_000, 32_000, "0.8", "2"),  # prompt == up_to uses that tier
        (32_001, 128_000, "2.4", "20"),  # up_to + 1 uses the next
        (128_000, 128_000, "2.4", "20"),
        (128_001, 1_000_000, "6", "60"),
        (1_000_000, 1_000_000, "6", "60"),
        (5_000_000, 1_000_000, "6", "60"),  # longer than every tier: the last applies
    ],
)
def test_tier_is_the_first_whose_up_to_covers_the_prompt(
    prompt_tokens: int, tier: int, input_price: str, output_price: str
) -> None:
    up = unit_prices(TIERED, prompt_tokens, NOON)
    assert (up.tier, up.input, up.output) == (tier, D(input_price), D(output_price))


def test_billing_tier_is_chosen_by_the_vendors_prompt_tokens_including_cached_ones() -> None:
    # 30,000 uncached + 2,001 cached = 32,001 prompt tokens: the second tier, although input alone fits the first.
    cost = price_usage(Usage(30_000, 2_001, 10), TIERED, version(), NOON)
    assert cost.unit_prices.tier == 128_000
    assert cost.input == D("0.072")  # 30,000 x 2.4 / 1M
    assert cost.cached_input == D("0.0048024")  # cached defaults to the tier's input price
    assert cost.output == D("0.0002")


# ---- cached input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "cached_unit"),
    [
        (Price("CNY", 1_000, D("0.001"), D("0.002"), cached_input=D("0.0001")), "0.0001"),
        (Price("CNY", 1_000, D("0.001"), D("0.002")), "0.001"),  # default: the input price
        (Price("CNY", 1_000, D("0.001"), D("0.002"), cached_input=D("0")), "0"),  # free cache hits stay free
    ],
    ids=["explicit", "defaults-to-input", "explicit-zero"],
)
def test_cached_input_is_priced_at_cached_input_defaulting_to_input(price: Price, cached_unit: str) -> None:
    cost = price_usage(Usage(input_tokens=1_000, cached_input_tokens=3_000, output_tokens=500), price, version(), NOON)
    assert cost.unit_prices.cached_input == D(cached_unit)
    assert cost.input == D("0.001")
    assert cost.cached_input == D(cached_unit) * 3
    assert cost.output == D("0.001")


def test_tier_own_cached_input_price_wins_over_the_base_one() -> None:
    price = Price(
        "CNY", 1_000_000, D("1"), D("2"), cached_input=D("0.1"),
        tiers=(Tier(10, D("1"), D("2"), cached_input=D("0.05")), Tier(100, D("3"), D("4"))),
    )
    assert unit_prices(price, 10, NOON).cached_input == D("0.05")
    assert unit_prices(price, 11, NOON).cached_input == D("3")  # no cached price for that tier: its input price


# ---- off-peak windows ----------------------------------------------------------------------------------------------

DEEPSEEK_V3 = Price(
    "CNY", 1_000_000, D("2"), D("8"), cached_input=D("0.5"),
    off_peak=(OffPeakWindow(time(16, 30), time(0, 30), "UTC", D("1"), D("4"), D("0.25")),),
)


@pytest.mark.parametrize(
    ("hh", "mm", "off_peak"),
    [
        (16, 29, False),
        (16, 30, True),
        (23, 59, True),
        (0, 0, True),
        (0, 29, True),
        (0, 30, False),
        (8, 0, False),
    ],
)
def test_off_peak_window_crossing_midnight_utc(hh: int, mm: int, off_peak: bool) -> None:
    at = datetime(2024, 5, 22, hh, mm, tzinfo=UTC)
    up = unit_prices(DEEPSEEK_V3, 1_000, at)
    if off_peak:
        assert (up.input, up.output, up.cached_input) == (D("1"), D("4"), D("0.25"))
        assert up.window == "off_peak 16:30-00:30 UTC"
    else:
        assert (up.input, up.output, up.cached_input) == (D("2"), D("8"), D("0.5"))
        assert up.window is None


SHANGHAI = OffPeakWindow(time(0, 30), time(8, 30), "Asia/Shanghai", D("1"), D("4"))


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (datetime(2024, 5, 22, 16, 29, tzinfo=UTC), False),  # 00:29 in Shanghai
        (datetime(2024, 5, 22, 16, 30, tzinfo=UTC), True),  # 00:30 in Shanghai
        (datetime(2024, 5, 23, 0, 29, tzinfo=UTC), True),  # 08:29 in Shanghai
        (datetime(2024, 5, 23, 0, 30, tzinfo=UTC), False),  # 08:30 in Shanghai
        (datetime.fromisoformat("2024-05-23T03:00:00+08:00"), True),
        (datetime.fromisoformat("2024-05-23T09:00:00+08:00"), False),
    ],
)
def test_off_peak_window_in_an_iana_zone_is_read_in_local_time(at: datetime, inside: bool) -> None:
    assert in_window(SHANGHAI, at) is inside


def test_off_peak_window_without_its_own_cached_price_uses_its_input_price() -> None:
    price = Price("CNY", 1_000_000, D("2"), D("8"), cached_input=D("0.5"), off_peak=(SHANGHAI,))
    up = unit_prices(price, 10, datetime(2024, 5, 22, 20, 0, tzinfo=UTC))
    assert up.cached_input == D("1")


def test_off_peak_window_overrides_tiers() -> None:
    price = Price(
        "CNY", 1_000_000, D("0.8"), D("2"),
        tiers=(Tier(32_000, D("0.8"), D("2")), Tier(128_000, D("2.4"), D("20"))),
        off_peak=(OffPeakWindow(time(16, 30), time(0, 30), "UTC", D("0.3"), D("1")),),
    )
    peak = unit_prices(price, 100_000, datetime(2024, 5, 22, 12, 0, tzinfo=UTC))
    off = unit_prices(price, 100_000, datetime(2024, 5, 22, 17, 0, tzinfo=UTC))
    assert (peak.input, peak.output, peak.tier) == (D("2.4"), D("20"), 128_000)
    assert (off.input, off.output, off.tier) == (D("0.3"), D("1"), None)


def test_billing_uses_the_window_in_force_when_the_request_started() -> None:
    usage = Usage(1_000_000, 0, 1_000_000)
    started_peak = price_usage(usage, DEEPSEEK_V3, version(), datetime(2024, 5, 22, 16, 29, 59, tzinfo=UTC))
    started_off = price_usage(usage, DEEPSEEK_V3, version(), datetime(2024, 5, 22, 16, 30, tzinfo=UTC))
    assert started_peak.total == D("10")
    assert started_off.total == D("5")


# ---- FX, free models, Cost ------------------------------------------------------------------------------------------


def test_usd_price_is_converted_to_the_reporting_currency_at_the_versions_rate() -> None:
    gpt4o = Price("USD", 1_000_000, D("5"), D("15"))
    cost = price_usage(Usage(1_000, 0, 2_000), gpt4o, version(number=3), NOON)
    assert (cost.currency, cost.reporting_currency, cost.fx_rate, cost.price_version) == ("USD", "CNY", D("7.10"), 3)
    assert (cost.input, cost.output, cost.total) == (D("0.005"), D("0.03"), D("0.035"))
    assert cost.input_reporting == D("0.0355")
    assert cost.output_reporting == D("0.213")
    assert cost.cached_input_reporting == D("0")
    assert cost.total_reporting == D("0.2485")


def test_price_in_the_reporting_currency_converts_at_exactly_one() -> None:
    cost = price_usage(Usage(1_000, 0, 0), Price("CNY", 1_000, D("0.001"), D("0.002")), version(), NOON)
    assert cost.fx_rate == D(1)
    assert cost.total_reporting == cost.total == D("0.001")


def test_missing_fx_rate_is_an_error_not_a_silent_zero() -> None:
    with pytest.raises(KeyError):
        price_usage(Usage(1, 0, 1), Price("EUR", 1_000, D("1"), D("1")), version(), NOON)


def test_free_model_costs_exactly_zero_and_keeps_every_token_in_usage() -> None:
    free = Price("CNY", 1_000, D("0"), D("0"))
    usage = Usage(input_tokens=12_345, cached_input_tokens=100, output_tokens=678)
    cost = price_usage(usage, free, version(), NOON)
    assert cost.total == 0 and cost.total_reporting == 0
    assert (cost.input, cost.cached_input, cost.output) == (D(0), D(0), D(0))
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens, usage.prompt_tokens) == (
        12_345, 100, 678, 12_445)


def test_cost_total_and_reporting_properties_sum_the_three_directions() -> None:
    up = UnitPrices("USD", 1_000, D("1"), D("0.5"), D("2"))
    cost = Cost("USD", D("0.001"), D("0.0005"), D("0.002"), "CNY", D("7.10"), 1, up)
    assert cost.total == D("0.0035")
    assert cost.input_reporting == D("0.0071")
    assert cost.cached_input_reporting == D("0.00355")
    assert cost.output_reporting == D("0.0142")
    assert cost.total_reporting == D("0.02485")
    assert cost.total_reporting == cost.input_reporting + cost.cached_input_reporting + cost.output_reporting


# ---- expected cost (ranking) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("up", "prompt", "output", "fx", "expected"),
    [
        (UnitPrices("CNY", 1_000, D("0.0005"), D("0.0005"), D("0.002")), 1_001, 0, D(1), "0.0005005"),
        (UnitPrices("CNY", 1_000, D("0.0008"), D("0.0008"), D("0.002")), 1_000, 256, D(1), "0.001312"),
        (UnitPrices("CNY", 1_000_000, D("2"), D("0.5"), D("8")), 1_000, 1_000, D(1), "0.01"),
        (UnitPrices("USD", 1_000_000, D("5"), D("5"), D("15")), 1_000, 1_000, D("7.10"), "0.142"),
        (UnitPrices("CNY", 1_000, D("0"), D("0"), D("0")), 100_000, 4_096, D(1), "0"),
    ],
)
def test_expected_cost_is_prompt_at_input_plus_output_at_output_in_reporting_currency(
    up: UnitPrices, prompt: int, output: int, fx: Decimal, expected: str
) -> None:
    assert expected_cost(up, prompt, output, fx) == D(expected)


def test_expected_cost_ignores_the_cached_price_because_cache_hits_are_not_predictable() -> None:
    cheap_cache = UnitPrices("CNY", 1_000, D("0.001"), D("0"), D("0.002"))
    no_cache = UnitPrices("CNY", 1_000, D("0.001"), D("0.001"), D("0.002"))
    assert expected_cost(cheap_cache, 1_000, 0, D(1)) == expected_cost(no_cache, 1_000, 0, D(1)) == D("0.001")


def test_a_price_unit_other_than_1k_or_1m_is_refused_rather_than_divided_with_rounding() -> None:
    assert tokens_cost(1001, Decimal("0.0005"), 1_000) == Decimal("0.0005005")
    with pytest.raises(ValueError, match="per 1K or per 1M"):
        tokens_cost(7, Decimal("1"), 3)


# ---- cache_write (tokens written to the vendor's prompt cache) ------------------------------------------------------

# Anthropic-style: writing to the cache costs more than input, reading from it a tenth (USD per 1M).
SONNET = Price("USD", 1_000_000, D("3"), D("15"), cached_input=D("0.3"), cache_write=D("3.75"))


def test_usage_directions_partition_the_prompt_cache_write_included() -> None:
    usage = Usage(1_001, 20_000, 333, "provider", 4_096)
    assert usage.cache_write_tokens == 4_096
    assert usage.prompt_tokens == 1_001 + 20_000 + 4_096 == 25_097
    assert Usage(5, 6, 7).cache_write_tokens == 0  # positional callers keep working, writing nothing
    assert Usage(5, 6, 7).prompt_tokens == 11


def test_each_direction_is_priced_at_its_own_price_cache_write_at_cache_write_to_the_digit() -> None:
    usage = Usage(input_tokens=1_001, cached_input_tokens=20_000, output_tokens=333, cache_write_tokens=4_096)
    cost = price_usage(usage, SONNET, version(), NOON)
    assert cost.unit_prices.cache_write == D("3.75")
    assert cost.input == D("0.003003")  # 1,001 x 3 / 1M
    assert cost.cached_input == D("0.006")  # 20,000 x 0.3 / 1M
    assert cost.cache_write == D("0.01536")  # 4,096 x 3.75 / 1M
    assert cost.output == D("0.004995")  # 333 x 15 / 1M
    assert cost.total == D("0.029358")
    assert cost.cache_write_reporting == D("0.109056")  # x 7.10
    assert cost.total_reporting == D("0.2084418")
    assert cost.total_reporting == (cost.input_reporting + cost.cached_input_reporting + cost.cache_write_reporting
                                    + cost.output_reporting)


@pytest.mark.parametrize(
    ("price", "write_unit", "write_cost"),
    [
        (Price("CNY", 1_000, D("0.001"), D("0.002"), cache_write=D("0.00125")), "0.00125", "0.00375"),
        (Price("CNY", 1_000, D("0.001"), D("0.002"), cached_input=D("0.0001")), "0.001", "0.003"),  # default: input
        (Price("CNY", 1_000, D("0.001"), D("0.002"), cache_write=D("0")), "0", "0"),  # free writes stay free
    ],
    ids=["explicit", "defaults-to-input-not-cached", "explicit-zero"],
)
def test_cache_write_is_priced_at_cache_write_defaulting_to_input(price: Price, write_unit: str,
                                                                   write_cost: str) -> None:
    cost = price_usage(Usage(1_000, 0, 0, cache_write_tokens=3_000), price, version(), NOON)
    assert cost.unit_prices.cache_write == D(write_unit)
    assert cost.cache_write == D(write_cost)
    assert cost.total == D("0.001") + D(write_cost)


def test_cost_without_cache_writes_is_unchanged_and_its_cache_write_is_zero() -> None:
    cost = price_usage(Usage(1_001, 0, 0), Price("CNY", 1_000, D("0.0005"), D("0.002")), version(), NOON)
    assert cost.cache_write == 0 and cost.cache_write_reporting == 0
    assert cost.total == D("0.0005005")


def test_billing_tier_counts_cache_write_tokens_in_the_prompt() -> None:
    # 30,000 input + 1,000 cached + 1,001 written = 32,001 prompt tokens: the second tier.
    cost = price_usage(Usage(30_000, 1_000, 10, cache_write_tokens=1_001), TIERED, version(), NOON)
    assert cost.unit_prices.tier == 128_000
    assert cost.cache_write == D("0.0024024")  # defaults to the tier's input price, 2.4 / 1M


def test_tier_cache_write_is_its_own_else_the_base_one_at_the_base_input_else_the_tier_input() -> None:
    price = Price(
        "CNY", 1_000_000, D("1"), D("2"), cache_write=D("1.25"),
        tiers=(Tier(10, D("1"), D("2")), Tier(100, D("3"), D("4"), cache_write=D("3.75")), Tier(1_000, D("5"), D("6"))),
    )
    assert unit_prices(price, 10, NOON).cache_write == D("1.25")  # the tier keeps the base input price
    assert unit_prices(price, 11, NOON).cache_write == D("3.75")  # the tier's own
    assert unit_prices(price, 101, NOON).cache_write == D("5")  # neither: the tier's input price


def test_off_peak_window_cache_write_is_its_own_else_its_input_price() -> None:
    own = OffPeakWindow(time(0, 30), time(8, 30), "Asia/Shanghai", D("1"), D("4"), cache_write=D("1.5"))
    night = datetime(2024, 5, 22, 20, 0, tzinfo=UTC)
    assert unit_prices(Price("CNY", 1_000_000, D("2"), D("8"), off_peak=(own,)), 10, night).cache_write == D("1.5")
    inherit = Price("CNY", 1_000_000, D("2"), D("8"), cache_write=D("2.5"), off_peak=(SHANGHAI,))
    assert unit_prices(inherit, 10, night).cache_write == D("1")
    assert unit_prices(inherit, 10, NOON).cache_write == D("2.5")


def test_unit_prices_built_without_a_cache_write_price_write_at_the_input_price() -> None:
    assert UnitPrices("CNY", 1_000, D("0.001"), D("0.0001"), D("0.002")).cache_write == D("0.001")
    assert UnitPrices("CNY", 1_000, D("0.001"), D("0.0001"), D("0.002"), cache_write=D("0")).cache_write == D("0")


@pytest.mark.parametrize(
    ("prompt", "cached", "written", "output", "expected"),
    [
        # 10,000 prompt: 6,000 read at 0.3, 2,000 written at 3.75, 2,000 fresh at 3; 500 output at 15; x 7.10.
        (10_000, 6_000, 2_000, 500, "0.16188"),
        (10_000, 10_000, 0, 0, "0.0213"),  # a whole warm prompt at the cached price
        (10_000, 0, 10_000, 0, "0.26625"),  # a whole prompt written to the cache
        (10_000, 0, 0, 0, "0.213"),  # no prediction: the whole prompt at input
        (1_000, 900, 500, 0, "0.0152295"),  # predictions larger than the estimate: the fresh rest is 0, not negative
    ],
)
def test_expected_cost_prices_predicted_cache_hits_and_writes_at_their_prices(
    prompt: int, cached: int, written: int, output: int, expected: str
) -> None:
    up = unit_prices(SONNET, prompt, NOON)
    cost = expected_cost(up, prompt, output, D("7.10"), cached_tokens=cached, cache_write_tokens=written)
    assert cost == D(expected)


def test_expected_cost_stays_exact_beyond_the_default_decimal_precision() -> None:
    # 28 significant digits is where the default context would round; the exact context does not.
    up = UnitPrices("CNY", 1_000, D("0.0000000000000000000000000001"), D("0"), D("1"))
    assert expected_cost(up, 1_000_000_007, 1, D(1)) == D("0.0010000000000000000001000000007")
