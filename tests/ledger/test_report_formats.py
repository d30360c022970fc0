"""Report formats: the CSV header, JSON and CSV agreeing, the table's total row, argument parsing."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext

import pytest

from gateway.ledger.queries import Partial, Window
from gateway.ledger.reports import (ReportError, build_report, make_window, money_str, parse_group_by, to_csv,
                                    to_json, to_table)

WINDOW = Window(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc))
# Contract section 7, character for character.
HEADER = ("requests,input_tokens,cached_input_tokens,cache_write_tokens,output_tokens,input_cost,cached_input_cost,"
          "cache_write_cost,output_cost,total_cost,baseline_cost,savings,currency")


def partial(keys: tuple[str, ...], version: int, base: bool, inp: str, out: str, baseline: str = "0",
            requests: int = 3, currency: str = "CNY") -> Partial:
    p = Partial(keys, version, base, currency, requests, 7 * requests, requests, 5 * requests,
                cache_write_tokens=11 * requests)
    p.money.update(input_cost_reporting=Decimal(inp), output_cost_reporting=Decimal(out),
                   cached_input_cost_reporting=Decimal("0.0000001"), cache_write_cost_reporting=Decimal("0.00000275"),
                   baseline_cost=Decimal(baseline))
    return p


PARTIALS = [
    partial(("alpha", "deepseek"), 1, True, "0.1234567890123456789", "0.000005", baseline="1.5"),
    partial(("alpha", "deepseek"), 2, False, "0.3", "0.0000011"),
    partial(("beta", "volcengine"), 1, False, "12345678.000000000000000001", "0.2"),
    partial(("beta", "zhipu"), 2, True, "0", "0", baseline="0.0000000000001"),
]


def report(currency: str = "CNY"):  # type: ignore[no-untyped-def]
    fx = {1: {"USD": Decimal("7.1")}, 2: {"USD": Decimal("7.3")}}
    return build_report(PARTIALS, WINDOW, ("team", "provider"), currency, fx.__getitem__)


def test_csv_header_is_exactly_the_contracts() -> None:
    text = to_csv(report())
    assert text.splitlines()[0] == "team,provider," + HEADER
    assert to_csv(build_report([], WINDOW, (), "CNY")).splitlines() == [HEADER]


def test_csv_has_no_total_row_and_json_agrees_with_it() -> None:
    rep = report()
    rows = list(csv.DictReader(io.StringIO(to_csv(rep))))
    doc = json.loads(to_json(rep))
    assert len(rows) == len(rep.rows) == 3  # two partials of (alpha, deepseek) merged, no total row
    assert doc["group_by"] == ["team", "provider"] and doc["currency"] == "CNY"
    assert doc["from"] == "2026-11-01T00:00:00+00:00" and doc["to"] == "2026-12-01T00:00:00+00:00"
    for from_csv, from_json in zip(rows, doc["rows"]):
        assert {k: ("" if v is None else str(v)) for k, v in from_json.items()} == from_csv
    assert isinstance(doc["rows"][0]["input_cost"], str) and isinstance(doc["rows"][0]["requests"], int)
    assert doc["total"]["total_cost"] == money_str(rep.total.total_cost)


def test_table_total_row_equals_the_sum_of_its_rows_to_the_last_digit() -> None:
    for currency in ("CNY", "USD"):
        rep = report(currency)
        lines = to_table(rep).splitlines()
        total_cells = lines[-1].split()
        assert total_cells[0] == "TOTAL"
        body = [ln.split() for ln in lines[2:-2]]
        total_cost_col = 2 + 9  # team, provider, then total_cost is the 10th figure
        with localcontext(prec=200):  # Python's default 28 digits would round the check itself
            summed = sum((Decimal(r[total_cost_col]) for r in body), Decimal(0))
        assert Decimal(total_cells[total_cost_col - 1]) == summed  # TOTAL spans the first group column only
        assert int(total_cells[1]) == sum(int(r[2]) for r in body)


def test_savings_compare_only_rows_with_a_baseline_and_money_is_exact() -> None:
    rep = report()
    alpha = dict(rep.rows)[("alpha", "deepseek")]
    assert alpha.input_cost == Decimal("0.4234567890123456789")
    assert alpha.baseline_cost == Decimal("1.5")
    assert alpha.savings == Decimal("1.5") - (Decimal("0.1234567890123456789") + Decimal("0.0000001")
                                              + Decimal("0.00000275") + Decimal("0.000005"))
    assert alpha.cache_write_cost == Decimal("0.0000055")  # two price versions' partials, exactly
    assert alpha.total_cost == alpha.input_cost + alpha.cached_input_cost + alpha.cache_write_cost + alpha.output_cost
    assert dict(rep.rows)[("beta", "volcengine")].baseline_cost is None
    assert money_str(rep.total.input_cost) == "12345678.4234567890123456799"


def test_conversion_divides_each_version_by_its_own_rate() -> None:
    rep = report("USD")
    beta = dict(rep.rows)[("beta", "volcengine")]
    assert beta.output_cost == Decimal("0.2") / Decimal("7.1")
    alpha = dict(rep.rows)[("alpha", "deepseek")]
    assert alpha.input_cost == Decimal("0.1234567890123456789") / Decimal("7.1") + Decimal("0.3") / Decimal("7.3")


def test_window_parsing() -> None:
    w = make_window("2026-11-01", "2026-12-01")
    assert w.start == datetime(2026, 11, 1, tzinfo=timezone.utc) and w.offset == timedelta(0)
    w = make_window("2026-11-01T00:00+08:00", "2026-11-02T00:00+08:00")
    assert w.start == datetime(2026, 10, 31, 16, tzinfo=timezone.utc) and w.offset == timedelta(hours=8)
    assert make_window("2026-11-01T10:00", "2026-11-01T11:00Z").start.tzinfo is not None
    with pytest.raises(ReportError, match="from: not a date"):
        make_window("November", "2026-12-01")
    with pytest.raises(ReportError, match="must be after"):
        make_window("2026-12-01", "2026-11-01")


def test_group_by_parsing() -> None:
    assert parse_group_by("team, provider,model") == ("team", "provider", "model")
    assert parse_group_by("api,day") == ("api", "day")
    assert parse_group_by("") == ()
    with pytest.raises(ReportError, match="unknown column 'vendor'"):
        parse_group_by("team,vendor")
    with pytest.raises(ReportError, match="repeated"):
        parse_group_by("team,team")


def test_money_text_has_no_exponent_or_trailing_zeros() -> None:
    assert money_str(Decimal("0.000005600000000000")) == "0.0000056"
    assert money_str(Decimal("1E+3")) == "1000"
    assert money_str(Decimal("0E-18")) == "0"
    assert money_str(None) == ""


def test_cache_write_columns_sit_between_cached_input_and_output_in_every_format() -> None:
    rep = report()
    row = next(csv.DictReader(io.StringIO(to_csv(rep))))
    assert (row["cache_write_tokens"], row["cache_write_cost"]) == ("66", "0.0000055")  # 2 x 3 requests x 11
    doc = json.loads(to_json(rep))
    assert doc["total"]["cache_write_tokens"] == 11 * 12 and doc["total"]["cache_write_cost"] == "0.000011"
    header = to_table(rep).splitlines()[0].split()
    assert header[header.index("cached_input_tokens") + 1] == "cache_write_tokens"
    assert header[header.index("cached_input_cost") + 1] == "cache_write_cost"
    assert dict(rep.rows)[("beta", "zhipu")].total_cost == Decimal("0.00000285")  # 0.0000001 + 0.00000275
