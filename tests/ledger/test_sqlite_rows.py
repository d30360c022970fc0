"""The fast paths of the SQLite row format give exactly what the general ones give."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gateway.ledger.sqlite_rows import sqlite_time
from gateway.ledger.tables import _money_text_general, money_text


def decimals() -> list[Decimal]:
    rnd = random.Random(5)
    out = [Decimal(t) for t in ("0", "-0", "0E-30", "0E+3", "1", "1E+3", "10", "1.0", "1.50", "0.000001",
                                "0.0000001", "1E-7", "2.5E-7", "123456789012345678901234567890",
                                "0." + "0" * 17 + "1", "0." + "0" * 18 + "1", "0." + "0" * 26 + "1",
                                "0." + "0" * 27 + "1", "7.1234", "0.0062694713837300")]
    for _ in range(3000):
        digits = rnd.randint(0, 10 ** rnd.randint(1, 30))
        out.append(Decimal(digits).scaleb(rnd.randint(-40, 6)))
    return out


def test_money_text_matches_the_general_path() -> None:
    for v in decimals():
        assert money_text(v) == _money_text_general(v), v


@pytest.mark.parametrize("bad", ["-0.01", "-1E-9", "NaN", "sNaN", "Infinity", "-Infinity"])
def test_money_text_refuses_what_money_never_is(bad: str) -> None:
    with pytest.raises(ValueError):
        money_text(Decimal(bad))


def test_sqlite_time_is_the_naive_utc_isoformat() -> None:
    for at in (datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, 23, 59, 59, 999999, timezone.utc),
               datetime(999, 1, 2, 3, 4, 5, 6, timezone.utc),
               datetime(2026, 11, 1, 7, 30, tzinfo=timezone(timedelta(hours=8))),
               datetime(2026, 3, 1, 0, 0, 1, 5, timezone(timedelta(hours=-5, minutes=-30)))):
        assert sqlite_time(at) == at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
    assert sqlite_time(None) is None
    with pytest.raises(ValueError):
        sqlite_time(datetime(2026, 11, 1))
