"""The fast paths of the SQLite row format give exactly what the general ones give."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gateway.decisions.pricing import price_usage
from gateway.domain import LedgerEntry, Price, PriceVersion, Usage
from gateway.ledger.sqlite_rows import INSERT_CONV, UPDATE_CONV, insert_row, sqlite_params, sqlite_time, update_row
from gateway.ledger.tables import _money_text_general, entry_values, money_text


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


def random_entries(n: int) -> list[LedgerEntry]:
    """Entries of every shape a row takes: in flight, completed with or without usage, cost and baseline, costs
    needing more than 18 decimals, foreign currencies, a time zone other than UTC."""
    rnd = random.Random(11)
    t0 = datetime(2026, 11, 1, 12, 0, 0, 123456, timezone.utc)
    prices = [Price("CNY", 1000, Decimal("0.0008"), Decimal("0.002"), Decimal("0.0002")),
              Price("USD", 1_000_000, Decimal("2.5"), Decimal("10"), Decimal("1.25")),
              Price("USD", 1_000_000, Decimal("0.1234567891234"), Decimal("0.00000000001"), None),
              Price("CNY", 1000, Decimal("0"), Decimal("0"), None),
              Price("USD", 1_000_000, Decimal("3"), Decimal("15"), Decimal("0.3"), cache_write=Decimal("3.75")),
              Price("CNY", 1000, Decimal("0.001"), Decimal("0.002"), cache_write=Decimal("0"))]
    versions = [PriceVersion(7, t0, "CNY", {"USD": Decimal("7.1234")}, {}),
                PriceVersion(8, t0, "CNY", {"USD": Decimal("7.123456789012345678")}, {}),
                PriceVersion(9, t0, "CNY", {"USD": Decimal("1.00")}, {}),  # x * 1.00 is not x digit for digit
                PriceVersion(10, t0, "CNY", {"USD": Decimal("7.1234567890123456789")}, {}),  # 19 decimals
                PriceVersion(11, t0, "CNY", {"USD": Decimal("1E+1")}, {})]
    out = []
    for i in range(n):
        started = t0 + timedelta(seconds=rnd.randint(0, 10**6), microseconds=rnd.randint(0, 999999))
        if rnd.random() < 0.2:
            started = started.astimezone(timezone(timedelta(hours=8)))
        e = LedgerEntry(request_id=f"gw-{i:032x}", started_at=started, team=rnd.choice(["default", "growth"]),
                        key_id=rnd.choice([None, "k1"]), route="auto", provider="p", model="m", upstream_model="um",
                        price_version=rnd.randint(1, 9), replica_id="r1", prompt_tokens_estimate=rnd.randint(0, 9999),
                        stream=rnd.random() < 0.5, api=rnd.choice(["chat", "responses", "messages", "embeddings"]))
        shape = rnd.randint(0, 4)
        if shape == 0:
            out.append(e)  # in flight
            continue
        usage = Usage(rnd.randint(0, 10**6), rnd.randint(0, 10**5), rnd.randint(0, 10**5),
                      source=rnd.choice(["provider", "estimated"]),
                      cache_write_tokens=rnd.choice([0, 0, rnd.randint(1, 10**5)]))
        cost = (price_usage(usage, rnd.choice(prices), rnd.choice(versions), started) if shape != 1 else None)
        baseline = rnd.choice([None, Decimal("0.5"), Decimal("0.1234567890123456789012"), Decimal("3E+2")])
        out.append(replace(e, status=rnd.choice(["success", "in_flight", "client_disconnected", "upstream_error"]),
                           usage=usage if shape != 2 else None, cost=cost, baseline_cost=baseline,
                           attempts=rnd.randint(1, 3), latency_ms=rnd.choice([None, 812]),
                           ttft_ms=rnd.choice([None, 95]), error_kind=rnd.choice([None, "timeout"])))
    return out


def test_rows_built_straight_from_an_entry_equal_the_column_dict_path() -> None:
    now = datetime(2026, 11, 2, 3, 4, 5, 678901, timezone.utc)
    entries = random_entries(3000)
    assert any(e.cost is not None and len(money_text(e.cost.total_reporting).partition(".")[2]) > 18
               for e in entries), "the sample must hold costs stored beyond 18 decimals"
    assert any(e.cost is not None and e.cost.cache_write and e.cost.fx_rate != 1 for e in entries)
    assert any(e.cost is not None and not e.cost.cache_write and len(str(e.cost.fx_rate)) > 20 for e in entries)
    for e in entries:
        values = entry_values(e, now)
        assert insert_row(e, now) == sqlite_params(values, INSERT_CONV), e
        assert update_row(e, now) == sqlite_params(values, UPDATE_CONV), e
