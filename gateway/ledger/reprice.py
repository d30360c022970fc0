"""What-if re-pricing: the ledger's recorded tokens under another price table, per group, actual vs re-priced.

Pure: it takes rows (from `queries.stream_usage`) and a price version. Each row is priced with
`decisions.pricing.price_usage` at its own `started_at`, so off-peak windows and prompt tiers apply exactly as they
would have. Rows whose deployment the new table does not price keep their actual cost and are counted as
`unpriced`. Both columns are in the new version's reporting currency (rows are assumed recorded in it too).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta, timezone
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

from gateway.decisions.pricing import price_usage
from gateway.domain import DeploymentKey, Price, PriceVersion, Usage
from gateway.ledger.queries import UsageRow
from gateway.ledger.reports import money_str, render_table
from gateway.money import EXACT

REPRICE_COLUMNS = ("requests", "actual_cost", "repriced_cost", "difference", "unpriced", "currency")
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RepriceLine:
    requests: int = 0
    actual_cost: Decimal = _ZERO
    repriced_cost: Decimal = _ZERO
    unpriced: int = 0

    @property
    def difference(self) -> Decimal:
        """Re-priced minus actual: negative when the new table would have been cheaper."""
        return EXACT.subtract(self.repriced_cost, self.actual_cost)

    def plus(self, other: RepriceLine) -> RepriceLine:
        return RepriceLine(self.requests + other.requests, EXACT.add(self.actual_cost, other.actual_cost),
                           EXACT.add(self.repriced_cost, other.repriced_cost), self.unpriced + other.unpriced)


def with_prices(base: PriceVersion, prices: Mapping[DeploymentKey, Price],
                fx_rates: Mapping[str, Decimal] | None = None) -> PriceVersion:
    """`base` with some deployments' prices (and FX rates) replaced: the what-if table of a price file."""
    return replace(base, prices={**base.prices, **prices}, fx_rates={**base.fx_rates, **(fx_rates or {})})


def group_key(row: UsageRow, group_by: Sequence[str], offset: timedelta) -> tuple[str, ...]:
    local = row.started_at.astimezone(timezone(offset))
    values = {"day": local.strftime("%Y-%m-%d"), "month": local.strftime("%Y-%m"), "team": row.team,
              "key": row.key_id or "", "route": row.route, "provider": row.provider, "model": row.model,
              "api": row.api}
    return tuple(values[g] for g in group_by)


class Repricing:
    """Accumulates rows one at a time (a month can be millions: they are streamed, never all in memory)."""

    def __init__(self, prices: PriceVersion, group_by: Sequence[str], offset: timedelta = timedelta(0)) -> None:
        self.prices = prices
        self.group_by = tuple(group_by)
        self.offset = offset
        self._groups: dict[tuple[str, ...], RepriceLine] = {}

    def add(self, row: UsageRow) -> None:
        actual = row.total_cost_reporting or _ZERO
        price = self.prices.prices.get((row.provider, row.model))
        if price is None:
            line = RepriceLine(1, actual, actual, 1)
        else:
            usage = Usage(row.input_tokens, row.cached_input_tokens, row.output_tokens,
                          cache_write_tokens=row.cache_write_tokens)
            cost = price_usage(usage, price, self.prices, row.started_at)
            line = RepriceLine(1, actual, cost.total_reporting)
        key = group_key(row, self.group_by, self.offset)
        known = self._groups.get(key)
        self._groups[key] = line if known is None else known.plus(line)

    def lines(self) -> list[tuple[tuple[str, ...], RepriceLine]]:
        return sorted(self._groups.items())


def reprice(rows: Iterable[UsageRow], prices: PriceVersion, group_by: Sequence[str],
            offset: timedelta = timedelta(0)) -> list[tuple[tuple[str, ...], RepriceLine]]:
    acc = Repricing(prices, group_by, offset)
    for row in rows:
        acc.add(row)
    return acc.lines()


def total(lines: Iterable[tuple[tuple[str, ...], RepriceLine]]) -> RepriceLine:
    out = RepriceLine()
    for _, line in lines:
        out = out.plus(line)
    return out


def render_reprice(group_by: Sequence[str], lines: list[tuple[tuple[str, ...], RepriceLine]],
                   currency: str) -> str:
    def cells(line: RepriceLine) -> list[str]:
        return [str(line.requests), money_str(line.actual_cost), money_str(line.repriced_cost),
                money_str(line.difference), str(line.unpriced), currency]

    body = [[*keys, *cells(line)] for keys, line in lines]
    label = ["TOTAL", *[""] * (len(group_by) - 1)] if group_by else []
    return render_table([*group_by, *REPRICE_COLUMNS], body, [*label, *cells(total(lines))],
                        numeric_from=len(group_by))
