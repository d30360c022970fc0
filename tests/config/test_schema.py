"""The config models and their field parsers: token counts, money, clock times, and conversion to domain types."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config.schema import (
    Config,
    DeploymentConfig,
    OffPeakConfig,
    PriceConfig,
    parse_clock,
    parse_money,
    parse_token_count,
)
from gateway.domain import Deployment, OffPeakWindow, Price, Tier

D = Decimal


@pytest.mark.parametrize(
    ("value", "expected"),
    [(4096, 4096), ("4096", 4096), ("32K", 32_000), ("32k", 32_000), ("128K", 128_000), ("1M", 1_000_000),
     ("10M", 10_000_000), (" 8K ", 8_000), (0, 0)],
)
def test_token_count_suffix_k_is_thousand_and_m_is_million(value: Any, expected: int) -> None:
    assert parse_token_count(value) == expected


@pytest.mark.parametrize("value", ["32G", "1.5M", "K", "", "-1K", True, 3.5, None, D("32")])
def test_token_count_refuses_anything_else(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a token count"):
        parse_token_count(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(D("0.0008"), "0.0008"), ("0.0008", "0.0008"), (" 2.5 ", "2.5"), (0, "0"), (15, "15"), ("1e-4", "0.0001")],
)
def test_money_is_an_exact_decimal(value: Any, expected: str) -> None:
    result = parse_money(value)
    assert type(result) is Decimal and result == D(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.0008, "exact decimals"),  # a float already lost the price's digits
        (True, "exact decimals"),
        ("cheap", "not a decimal number"),
        (None, "not a decimal number"),
        ([1], "not a decimal number"),
        (D("NaN"), "not a finite number"),
        (D("Infinity"), "not a finite number"),
        ("-0.001", "must not be negative"),
        (-1, "must not be negative"),
    ],
)
def test_money_refuses_floats_non_numbers_non_finite_and_negatives(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_money(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("16:30", time(16, 30)),
        ("0:30", time(0, 30)),
        ("00:30", time(0, 30)),
        ("24:00", time(0, 0)),
        (990, time(16, 30)),  # plain YAML 1.1 reads an unquoted 16:30 as sexagesimal 990
        (30, time(0, 30)),
        (time(8, 15), time(8, 15)),
    ],
)
def test_clock_parses_text_sexagesimal_ints_and_times(value: Any, expected: time) -> None:
    assert parse_clock(value) == expected


@pytest.mark.parametrize("value", ["25:00", "16:60", "4pm", "16", "", True, 16.5])
def test_clock_refuses_what_is_not_a_time_of_day(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a time of day"):
        parse_clock(value)


def test_price_config_defaults_and_conversion_to_domain_price() -> None:
    pc = PriceConfig.model_validate({
        "per": "1M", "input": D("0.8"), "output": 2, "cached_input": "0.2",
        "tiers": [{"up_to": "32K", "input": D("0.8"), "output": 2}, {"up_to": "128K", "input": D("2.4"), "output": 20}],
        "off_peak": [{"from": "16:30", "to": "00:30", "input": 1, "output": 4}],
    })
    assert pc.to_price() == Price(
        currency="CNY", per=1_000_000, input=D("0.8"), output=D(2), cached_input=D("0.2"),
        tiers=(Tier(32_000, D("0.8"), D(2)), Tier(128_000, D("2.4"), D(20))),
        off_peak=(OffPeakWindow(time(16, 30), time(0, 30), "UTC", D(1), D(4)),),
    )
    assert PriceConfig.model_validate({"input": 1, "output": 1}).to_price().per == 1_000


def test_float_price_reaching_the_schema_is_refused() -> None:
    with pytest.raises(ValidationError, match="exact decimals"):
        PriceConfig.model_validate({"input": 0.0008, "output": D("0.002")})


@pytest.mark.parametrize(("tz", "stored"), [("UTC", "UTC"), ("utc", "UTC"), ("Asia/Shanghai", "Asia/Shanghai"),
                                            ("America/New_York", "America/New_York")])
def test_off_peak_tz_accepts_utc_and_iana_zones(tz: str, stored: str) -> None:
    w = OffPeakConfig.model_validate({"from": "16:30", "to": "00:30", "tz": tz, "input": 1, "output": 2})
    assert w.tz == stored


@pytest.mark.parametrize("tz", ["Mars/Base", "CST+8", "", "../etc/passwd"])
def test_off_peak_tz_refuses_unknown_zones(tz: str) -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        OffPeakConfig.model_validate({"from": "16:30", "to": "00:30", "tz": tz, "input": 1, "output": 2})


def test_deployment_config_defaults_upstream_model_to_model() -> None:
    dc = DeploymentConfig.model_validate({
        "provider": "zhipu", "model": "glm-3-turbo", "context_window": "128K", "quality": 75,
        "capabilities": ["tools"], "price": {"input": D("0.001"), "output": D("0.001")},
    })
    assert dc.to_deployment() == Deployment(
        provider="zhipu", model="glm-3-turbo", upstream_model="glm-3-turbo", context_window=128_000,
        max_output_tokens=None, quality=75, capabilities=frozenset({"tools"}), mode="chat", price_key=None,
    )


def test_config_without_routes_gets_an_auto_route() -> None:
    cfg = Config.model_validate({
        "providers": {"p": {"api_base": "http://x"}},
        "deployments": [{"provider": "p", "model": "m", "context_window": 8000, "quality": 1,
                         "price": {"input": 0, "output": 0}}],
    })
    assert list(cfg.routes) == ["auto"]
    assert cfg.gateway.max_attempts == 3 and cfg.gateway.default_expected_output_tokens == 256
    assert cfg.gateway.cooldown_after_failures == 3 and cfg.gateway.cooldown_s == 30


def test_litellm_provider_needs_litellm_provider_name() -> None:
    with pytest.raises(ValidationError, match="needs litellm_provider"):
        Config.model_validate({"providers": {"p": {"api_base": "http://x", "api_style": "litellm"}},
                               "deployments": []})
