"""Money never passes through Python's default 28-digit decimal context."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Context, Decimal, localcontext

from gateway.decisions.pricing import price_usage, tokens_cost
from gateway.domain import Price, PriceVersion, Usage
from gateway.money import money_str

LONG_PRICE = Decimal("0.1234567890123456789012345678901")  # 31 significant digits


def test_tokens_cost_keeps_every_digit_beyond_28():
    cost = tokens_cost(7, LONG_PRICE, 1_000)
    assert cost == Decimal("0.0008641975230864197523086419752307")
    assert money_str(cost) == "0.0008641975230864197523086419752307"


def test_reporting_cost_and_its_header_text_are_exact_with_a_long_fx_rate():
    price = Price("USD", 1_000_000, LONG_PRICE, LONG_PRICE)
    version = PriceVersion(1, datetime(2026, 1, 1, tzinfo=timezone.utc), "CNY",
                           {"USD": Decimal("7.123456789012345678901")}, {("p", "m"): price})
    cost = price_usage(Usage(1_000_001, 0, 999_999), price, version, datetime(2026, 1, 2, tzinfo=timezone.utc))
    fx = Decimal("7.123456789012345678901")
    with localcontext(prec=200):  # ground truth, far from any rounding
        exact = (LONG_PRICE * 1_000_001 + LONG_PRICE * 999_999) / 1_000_000 * fx
    rounded = (LONG_PRICE * 1_000_001 + LONG_PRICE * 999_999).scaleb(-6) * fx  # Python's default 28 digits
    assert rounded != exact  # the case really needs more than 28 digits
    assert cost.total_reporting == exact
    assert money_str(cost.total_reporting) == format(exact.normalize(Context(prec=200)), "f")


def test_money_text_has_no_exponent_or_trailing_zeros():
    assert money_str(Decimal("0.00050050")) == "0.0005005"
    assert money_str(Decimal("0E-9")) == "0"
    assert money_str(Decimal("1.2E+3")) == "1200"
