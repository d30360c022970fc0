"""Finance reports as pure functions: window parsing, merging per-group sums, currency conversion, formatting.

Time: `from` is inclusive, `to` exclusive; a date means its midnight; a time without offset is UTC. Day and month
columns are calendar days/months in UTC, or in the fixed offset `from` carries (`--from 2026-11-01T00:00+08:00`
buckets by Beijing days), so a report's buckets line up with its window.

Money: every sum is an exact `Decimal` (additions in an unbounded context). `--currency C` converts each
(group, price version) sum at that version's FX rate (`fx_for_version(v)[C]`: reporting-currency units per unit
of C), a division rounded to 28 significant digits; the total row is then the exact sum of the rows shown.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from gateway.ledger.queries import GROUP_BY_CHOICES, Partial, Window, merge
from gateway.money import EXACT
from gateway.money import money_str as exact_text
from gateway.prices.book import PriceBook

FxForVersion = Callable[[int], Mapping[str, Decimal]]
COLUMNS = ("requests", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "input_cost",
           "cached_input_cost", "cache_write_cost", "output_cost", "total_cost", "baseline_cost", "savings",
           "currency")
FORMATS = ("table", "csv", "json")
_DIVIDE = Context(prec=28)
_ZERO = Decimal(0)


class ReportError(ValueError):
    """A report that cannot be made as asked (bad window, unknown column, missing FX rate)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param  # the argument at fault, for a 400's `param`


def fx_from_book(book: PriceBook) -> FxForVersion:
    """FX rates by price version: reporting-currency units per unit of each currency (its own is 1)."""
    def fx(version: int) -> dict[str, Decimal]:
        v = book.get(version)
        if v is None:
            raise ReportError(f"price version {version} is not in the price table")
        return {**v.fx_rates, v.reporting_currency: Decimal(1)}

    return fx


# ------------------------------------------------------------------------------------------------ arguments
def parse_instant(text: str, name: str = "from") -> datetime:
    """`2026-11-01` (midnight UTC), `2026-11-01T08:00` (UTC), `2026-11-01T08:00+08:00` or `...Z`."""
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{name}: not a date or ISO time: {text!r} (e.g. 2026-11-01 or 2026-11-01T00:00+08:00)",
                          name) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def make_window(start_text: str, end_text: str) -> Window:
    start, end = parse_instant(start_text, "from"), parse_instant(end_text, "to")
    if end <= start:
        raise ReportError(f"to ({end.isoformat()}) must be after from ({start.isoformat()})", "to")
    return Window(start, end, start.utcoffset() or timedelta(0))


def parse_group_by(value: str | Sequence[str] | None) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = tuple(i.strip().lower() for i in items if i.strip())
    for n in names:
        if n not in GROUP_BY_CHOICES:
            raise ReportError(f"group_by: unknown column {n!r} (choose from {', '.join(GROUP_BY_CHOICES)})",
                              "group_by")
    if len(set(names)) != len(names):
        raise ReportError(f"group_by: a column is repeated in {','.join(names)}", "group_by")
    return names


# ------------------------------------------------------------------------------------------------ the report
@dataclass(frozen=True, slots=True)
class Line:
    """One report row: its fields are the columns of `COLUMNS` but `currency`, in that order."""

    requests: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    input_cost: Decimal
    cached_input_cost: Decimal
    cache_write_cost: Decimal
    output_cost: Decimal
    total_cost: Decimal
    baseline_cost: Decimal | None  # None: no row of the group has a baseline
    savings: Decimal | None


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    currency: str
    group_by: tuple[str, ...]
    rows: list[tuple[tuple[str, ...], Line]]
    total: Line


def _add(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    return a if b is None else EXACT.add(a, b)


def sum_lines(lines: Iterable[Line]) -> Line:
    out = Line(0, 0, 0, 0, 0, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, None, None)
    for ln in lines:
        out = Line(
            out.requests + ln.requests, out.input_tokens + ln.input_tokens,
            out.cached_input_tokens + ln.cached_input_tokens, out.cache_write_tokens + ln.cache_write_tokens,
            out.output_tokens + ln.output_tokens,
            EXACT.add(out.input_cost, ln.input_cost), EXACT.add(out.cached_input_cost, ln.cached_input_cost),
            EXACT.add(out.cache_write_cost, ln.cache_write_cost), EXACT.add(out.output_cost, ln.output_cost),
            EXACT.add(out.total_cost, ln.total_cost),
            _add(out.baseline_cost, ln.baseline_cost), _add(out.savings, ln.savings),
        )
    return out


def _partial_line(p: Partial, currency: str, fx_for_version: FxForVersion | None) -> Line:
    rate: Decimal | None = None  # None: the rows are already in `currency`
    if p.reporting_currency is not None and p.reporting_currency != currency:
        rate = (fx_for_version(p.price_version) if fx_for_version is not None else {}).get(currency)
        if rate is None or rate <= 0:
            raise ReportError(f"price version {p.price_version} has no FX rate for {currency} "
                              f"(its rows are in {p.reporting_currency})", "currency")

    def conv(x: Decimal) -> Decimal:
        return x if rate is None or not x else _DIVIDE.divide(x, rate)

    m = p.money
    inp, cached, written, out = (conv(m[c]) for c in ("input_cost_reporting", "cached_input_cost_reporting",
                                                      "cache_write_cost_reporting", "output_cost_reporting"))
    total = EXACT.add(EXACT.add(EXACT.add(inp, cached), written), out)
    baseline = conv(m["baseline_cost"]) if p.has_baseline else None
    savings = EXACT.subtract(baseline, total) if baseline is not None else None
    return Line(p.requests, p.input_tokens, p.cached_input_tokens, p.cache_write_tokens, p.output_tokens, inp,
                cached, written, out, total, baseline, savings)


def regroup(partials: Iterable[Partial], fetched: Sequence[str], wanted: Sequence[str]) -> list[Partial]:
    """Partials fetched grouped by `fetched`, re-summed (exactly) as if fetched grouped by `wanted` (a subset).

    Partials sharing the new keys, price version and baseline presence are merged before any conversion, so a
    report built from the result is identical, digit for digit, to one built from `fetch_partials(wanted)`: one
    query can serve a page's chart and its table.
    """
    index = [list(fetched).index(g) for g in wanted]
    return merge(partials, lambda p: tuple(p.keys[i] for i in index))


def build_report(partials: Iterable[Partial], window: Window, group_by: Sequence[str], currency: str,
                 fx_for_version: FxForVersion | None = None) -> Report:
    groups: dict[tuple[str, ...], list[Line]] = {}
    for p in partials:
        keys = tuple("" if k is None else str(k) for k in p.keys)
        groups.setdefault(keys, []).append(_partial_line(p, currency, fx_for_version))
    rows = [(keys, sum_lines(lines)) for keys, lines in sorted(groups.items())]
    return Report(window.start, window.end, currency, tuple(group_by), rows, sum_lines(ln for _, ln in rows))


# ------------------------------------------------------------------------------------------------ formatting
def money_str(amount: Decimal | None) -> str:
    """A report cell: the exact money text, or empty when there is no amount (e.g. no baseline)."""
    return "" if amount is None else exact_text(amount)


def line_cells(line: Line, currency: str) -> dict[str, Any]:
    """One report line as its CSV cells (money as exact text, empty where there is no amount)."""
    cells: dict[str, Any] = {}
    for f in fields(Line):
        v = getattr(line, f.name)
        cells[f.name] = v if isinstance(v, int) else money_str(v)
    cells["currency"] = currency
    return cells


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*report.group_by, *COLUMNS])
    for keys, line in report.rows:
        cells = line_cells(line, report.currency)
        w.writerow([*keys, *(cells[c] for c in COLUMNS)])
    return buf.getvalue()


def to_json_obj(report: Report) -> dict[str, Any]:
    def obj(line: Line, keys: tuple[str, ...] = ()) -> dict[str, Any]:
        cells = line_cells(line, report.currency)
        for money in ("baseline_cost", "savings"):
            cells[money] = cells[money] or None
        return {**dict(zip(report.group_by, keys)), **cells}

    return {
        "from": report.start.isoformat(), "to": report.end.isoformat(), "currency": report.currency,
        "group_by": list(report.group_by), "rows": [obj(line, keys) for keys, line in report.rows],
        "total": obj(report.total),
    }


def to_json(report: Report) -> str:
    return orjson.dumps(to_json_obj(report), option=orjson.OPT_INDENT_2).decode()


def to_table(report: Report) -> str:
    header = [*report.group_by, *COLUMNS]
    body = [[*keys, *(str(line_cells(line, report.currency)[c]) for c in COLUMNS)] for keys, line in report.rows]
    label = ["TOTAL", *[""] * (len(report.group_by) - 1)] if report.group_by else []
    total = [*label, *(str(line_cells(report.total, report.currency)[c]) for c in COLUMNS)]
    return render_table(header, body, total, numeric_from=len(report.group_by))


def render_table(header: Sequence[str], body: Sequence[Sequence[str]], total: Sequence[str] | None,
                 numeric_from: int) -> str:
    """Aligned text columns (numbers right-aligned), a rule under the header and above the total row."""
    everything = [list(header), *map(list, body), *([list(total)] if total is not None else [])]
    widths = [max(len(r[i]) for r in everything) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [fmt(header), rule, *(fmt(r) for r in body)]
    if total is not None:
        lines += [rule, fmt(total)]
    return "\n".join(lines) + "\n"


def render(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return to_csv(report)
    if fmt == "json":
        return to_json(report) + "\n"
    if fmt == "table":
        return to_table(report)
    raise ReportError(f"format: choose one of {', '.join(FORMATS)}, got {fmt!r}", "format")
