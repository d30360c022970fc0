"""The spend page's data: the same report functions as `gateway report` and `GET /admin/reports/spend`
(`queries.fetch_partials` -> `reports.build_report`), one query for the chart and the table together.

The chart needs (day, stack) and the table its own group-by. From the daily roll-ups these are two small queries;
from the ledger itself (a report by key, or at a non-UTC offset) one query over both groupings, re-summed exactly
by `reports.regroup`, so the page reads the ledger once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import urlencode

from gateway.console.charts import Bars
from gateway.ledger import reports, rollup
from gateway.ledger.queries import FILTER_CHOICES, GROUP_BY_CHOICES, fetch_partials
from gateway.prices.book import PriceBook

STACKS = tuple(c for c in ("provider", "model", "team", "route", "api") if c in GROUP_BY_CHOICES)


@dataclass(frozen=True, slots=True)
class SpendQuery:
    start: str
    end: str
    stack: str
    group_by: tuple[str, ...]
    currency: str
    filters: dict[str, str] = field(default_factory=dict)

    def args(self, **override: str) -> str:
        """The query string for this page, a download of it, or a variation."""
        base = {"from": self.start, "to": self.end, "stack": self.stack, "group_by": ",".join(self.group_by),
                "currency": self.currency, **self.filters}
        base.update(override)
        return urlencode({k: v for k, v in base.items() if v})


def month_bounds(today: date) -> tuple[str, str]:
    first = today.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first.isoformat(), nxt.isoformat()


def parse_query(params: Mapping[str, str], reporting_currency: str, today: date | None = None) -> SpendQuery:
    """The page's arguments; a bad one raises ReportError naming it."""
    start, end = month_bounds(today or datetime.now(timezone.utc).date())
    stack = (params.get("stack") or "provider").strip()
    if stack not in STACKS:
        raise reports.ReportError(f"stack: choose one of {', '.join(STACKS)}", "stack")
    group_by = reports.parse_group_by(params["group_by"] if "group_by" in params else "provider")
    filters = {k: params[k].strip() for k in FILTER_CHOICES if params.get(k, "").strip()}
    return SpendQuery((params.get("from") or start).strip(), (params.get("to") or end).strip(), stack, group_by,
                      (params.get("currency") or reporting_currency).strip().upper(), filters)


@dataclass(frozen=True, slots=True)
class SpendPage:
    table: reports.Report
    chart: Bars


async def load(engine: Any, book: PriceBook, q: SpendQuery) -> SpendPage:
    window = reports.make_window(q.start, q.end)
    fx = reports.fx_from_book(book)
    chart_groups = ("day", q.stack)
    if rollup.usable((*chart_groups, *q.group_by), q.filters, window):
        # Whole days come from the daily roll-ups: two small queries (run side by side, on two connections) beat
        # one over the product of both groupings.
        table_parts, chart_parts = await asyncio.gather(fetch_partials(engine, window, q.group_by, q.filters),
                                                        fetch_partials(engine, window, chart_groups, q.filters))
    else:  # the ledger itself: read it once, re-sum for the chart and the table
        fetched = tuple(dict.fromkeys((*chart_groups, *q.group_by)))
        partials = await fetch_partials(engine, window, fetched, q.filters)
        table_parts = reports.regroup(partials, fetched, q.group_by)
        chart_parts = reports.regroup(partials, fetched, chart_groups)
    table = reports.build_report(table_parts, window, q.group_by, q.currency, fx)
    by_day = reports.build_report(chart_parts, window, chart_groups, q.currency, fx)
    return SpendPage(table, bars(by_day))


def bars(report: reports.Report) -> Bars:
    """(day, stack) rows -> the chart's data: stacks ordered by their total, largest at the bottom."""
    values: dict[tuple[str, str], Decimal] = {}
    per_series: dict[str, Decimal] = {}
    for (day, name), line in report.rows:
        values[(day, name)] = line.total_cost
        per_series[name] = per_series.get(name, Decimal(0)) + line.total_cost
    days = sorted({day for day, _ in values})
    series = sorted(per_series, key=lambda n: (-per_series[n], n))
    return Bars(days, series, values)


async def download(engine: Any, book: PriceBook, q: SpendQuery, fmt: str) -> str:
    """The table's rows as `gateway report --format csv|json` prints them for the same arguments."""
    window = reports.make_window(q.start, q.end)
    partials = await fetch_partials(engine, window, q.group_by, q.filters)
    report = reports.build_report(partials, window, q.group_by, q.currency, reports.fx_from_book(book))
    return reports.render(report, fmt)
