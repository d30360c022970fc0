"""Applying partial updates: what changes, what keeps its value, and refusals that name the field."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.prices.book import version_from_config
from gateway.prices.changes import apply_update, effective_time
from tests.prices.conftest import T0, make_config


def _put(body: dict[str, Any]):  # type: ignore[no-untyped-def]
    config = make_config()
    return apply_update(version_from_config(config), body, config, T0)


def test_a_partial_update_changes_only_the_named_fields() -> None:
    change = _put({"prices": [{"provider": "dashscope", "model": "qwen-long", "input": "0.0005"}]})
    qwen = change.version.prices[("dashscope", "qwen-long")]
    assert qwen.input == Decimal("0.0005") and qwen.output == Decimal("0.02")  # output kept
    assert [(c.field, c.old, c.new) for c in change.diff.changed] == [("input", "0.02", "0.0005")]
    base = version_from_config(make_config())
    for key, price in base.prices.items():  # deployments not named keep their prices
        if key != ("dashscope", "qwen-long"):
            assert change.version.prices[key] == price
    assert ("deepseek", "deepseek-v2") in change.diff.not_named


def test_decimal_strings_and_numbers_are_both_exact() -> None:
    change = _put({"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": Decimal("0.00012345678901234567"),
                               "cached_input": "0.000000000000000001"}]})
    p = change.version.prices[("deepseek", "deepseek-v2")]
    assert p.input == Decimal("0.00012345678901234567") and p.cached_input == Decimal("1E-18")


def test_an_equal_value_is_not_a_change() -> None:
    change = _put({"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": "0.0010"}]})
    assert not change.diff.has_changes and change.diff.unchanged == (("deepseek", "deepseek-v2"),)


def test_fx_rates_update_is_part_of_the_version() -> None:
    change = _put({"fx_rates": {"USD": "7.25"}})  # `prices` may be left out when only FX rates change
    assert change.version.fx_rates["USD"] == Decimal("7.25")
    assert change.diff.fx_changed == (("USD", "7.10", "7.25"),)


@pytest.mark.parametrize(("entry", "param"), [
    ({"provider": "deepseek", "model": "deepseek-v9", "input": "1"}, "prices[0].model"),
    ({"provider": "nobody", "model": "deepseek-v2", "input": "1"}, "prices[0].provider"),
    ({"provider": "deepseek", "model": "deepseek-v2", "input": "-0.001"}, "prices[0].input"),
    ({"provider": "deepseek", "model": "deepseek-v2", "output": "abc"}, "prices[0].output"),
    ({"provider": "deepseek", "model": "deepseek-v2", "currency": "yuan"}, "prices[0].currency"),
    ({"provider": "deepseek", "model": "deepseek-v2", "currency": "EUR"}, "prices[0].currency"),  # no fx rate
    ({"provider": "deepseek", "model": "deepseek-v2", "per": "1G"}, "prices[0].per"),
    ({"provider": "dashscope", "model": "qwen-plus",
      "tiers": [{"up_to": "128K", "input": "2.4", "output": "20"}, {"up_to": "32K", "input": "0.8", "output": "2"}]},
     "prices[0].tiers"),
    ({"provider": "dashscope", "model": "qwen-plus",
      "tiers": [{"up_to": "32K", "input": "-1", "output": "2"}]}, "prices[0].tiers[0].input"),
    ({"provider": "deepseek", "model": "deepseek-v2", "discount": "1"}, "prices[0].discount"),
    ({"provider": "deepseek", "model": "deepseek-v2", "context_window": 64000}, "prices[0].context_window"),
])
def test_bad_updates_are_refused_naming_the_field(entry: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        _put({"prices": [{"provider": "dashscope", "model": "qwen-long", "input": "0.001"}, entry][1:]})
    assert caught.value.param == param
    assert param in caught.value.message


def test_a_bad_fx_rate_and_a_duplicate_entry_name_their_field() -> None:
    with pytest.raises(BadRequest) as caught:
        _put({"prices": [], "fx_rates": {"USD": "-7"}})
    assert caught.value.param == "fx_rates.USD"
    with pytest.raises(BadRequest) as caught:
        _put({"prices": [{"provider": "deepseek", "model": "deepseek-v2"},
                         {"provider": "deepseek", "model": "deepseek-v2"}]})
    assert caught.value.param == "prices[1]"  # the second naming of one deployment


def test_a_past_or_absent_effective_from_means_now() -> None:
    assert effective_time(None, T0) == T0
    assert effective_time(T0 - timedelta(days=1), T0) == T0
    assert effective_time(T0 + timedelta(days=1), T0) == T0 + timedelta(days=1)
