"""The SQL side of reports: per-group sums, exact on both backends, computed by the database.

PostgreSQL sums its NUMERIC money columns with `SUM` (exact). SQLite sums the fixed-point text of
`tables.Money` as three int64 sums per column: the integer part (`CAST(x AS INTEGER)` reads the digits before
the point), decimals 1-9 and decimals 10-18 (`substr(x, -18, 9)`, `substr(x, -9)`). Each piece of a row is below
1e9, so a group can hold 9 billion rows before a piece could overflow; the pieces are recombined exactly in
Python. Rows stored with more than 18 decimals (`money_scale` > 18, not produced by realistic prices) are kept
in groups of their own and re-summed exactly in Python. SQLite's own SUM/TOTAL over text would go through
binary floats and is never used for money.

Results carry two hidden keys besides the requested groups: the price version (so a report can convert each
row at its own version's FX rates) and whether the row has a baseline cost (so savings only compare rows that
have one). Day and month buckets are computed in SQL from UTC time shifted by the window's fixed offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, AsyncIterator, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ledger.tables import BASE_SCALE, ledger
from gateway.money import EXACT

GROUP_BY_CHOICES = ("day", "month", "team", "key", "route", "provider", "model", "api")
SUMMED_MONEY = ("input_cost_reporting", "cached_input_cost_reporting", "cache_write_cost_reporting",
                "output_cost_reporting", "baseline_cost")
_ZERO = Decimal(0)
_E9 = Decimal("1e-9")
_E18 = Decimal("1e-18")


@dataclass(frozen=True, slots=True)
class Window:
    """`[start, end)` in absolute time; day/month buckets are calendar days at UTC + `offset`."""

    start: datetime
    end: datetime
    offset: timedelta = timedelta(0)


@dataclass(slots=True)
class Partial:
    """Sums over the rows of one group that share a price version (and baseline presence)."""

    keys: tuple[str | None, ...]
    price_version: int
    has_baseline: bool
    reporting_currency: str | None = None
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    money: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(SUMMED_MONEY, _ZERO))


def _bucket(fmt: str, dialect: str, offset: timedelta) -> sa.ColumnElement[Any]:
    col = ledger.c.started_at
    minutes = int(offset.total_seconds() // 60)
    if dialect == "postgresql":
        utc: sa.ColumnElement[Any] = sa.func.timezone("UTC", col)
        if minutes:
            utc = utc + sa.literal_column(f"INTERVAL '{minutes} minutes'")  # an int we computed, not user text
        return sa.func.to_char(utc, "YYYY-MM-DD" if fmt == "day" else "YYYY-MM", type_=sa.String)
    # The stored text is 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC; datetime() shifts it when buckets are not UTC.
    text: sa.ColumnElement[Any] = sa.type_coerce(col, sa.String) if not minutes else sa.func.datetime(
        col, f"{minutes:+d} minutes", type_=sa.String)
    return sa.func.substr(text, 1, 10 if fmt == "day" else 7, type_=sa.String)


def group_expr(name: str, dialect: str, offset: timedelta) -> sa.ColumnElement[Any]:
    if name in ("day", "month"):
        return _bucket(name, dialect, offset)
    if name == "key":
        return ledger.c.key_id
    if name in GROUP_BY_CHOICES:
        return ledger.c[name]
    raise ValueError(f"unknown group-by column {name!r} (choose from {', '.join(GROUP_BY_CHOICES)})")


def _money_sums(name: str, dialect: str) -> list[sa.ColumnElement[Any]]:
    col = ledger.c[name]
    if dialect == "postgresql":
        return [sa.func.sum(col)]
    raw = sa.type_coerce(col, sa.String)  # the stored text, not the Decimal the column type would return
    return [
        sa.func.sum(sa.cast(raw, sa.BigInteger)),
        sa.func.sum(sa.cast(sa.func.substr(raw, -18, 9), sa.BigInteger)),
        sa.func.sum(sa.cast(sa.func.substr(raw, -9), sa.BigInteger)),
    ]


def _combine(values: Sequence[Any], dialect: str) -> Decimal:
    if dialect == "postgresql":
        return _ZERO if values[0] is None else Decimal(values[0])
    whole, hi, lo = (0 if v is None else int(v) for v in values)
    return EXACT.add(EXACT.add(Decimal(whole), EXACT.multiply(Decimal(hi), _E9)), EXACT.multiply(Decimal(lo), _E18))


def _in_window(window: Window) -> sa.ColumnElement[bool]:
    return sa.and_(ledger.c.started_at >= window.start, ledger.c.started_at < window.end)


async def fetch_partials(engine: AsyncEngine, window: Window, group_by: Sequence[str]) -> list[Partial]:
    dialect = engine.dialect.name
    groups = [group_expr(g, dialect, window.offset).label(f"g{i}") for i, g in enumerate(group_by)]
    has_baseline = (ledger.c.baseline_cost.is_not(None)).label("has_baseline")
    scale = ledger.c.money_scale if dialect != "postgresql" else sa.literal_column(str(BASE_SCALE))
    width = 1 if dialect == "postgresql" else 3
    stmt = (
        sa.select(
            *groups, ledger.c.price_version, has_baseline, scale.label("scale"),
            sa.func.max(ledger.c.reporting_currency), sa.func.count(),
            sa.func.sum(ledger.c.input_tokens), sa.func.sum(ledger.c.cached_input_tokens),
            sa.func.sum(ledger.c.cache_write_tokens), sa.func.sum(ledger.c.output_tokens),
            *(e for m in SUMMED_MONEY for e in _money_sums(m, dialect)),
        )
        .where(_in_window(window))
        .group_by(*groups, ledger.c.price_version, has_baseline, *([] if dialect == "postgresql" else [scale]))
    )
    n = len(groups)
    partials: dict[tuple[Any, ...], Partial] = {}
    wide: set[tuple[Any, ...]] = set()
    async with engine.connect() as conn:
        for row in (await conn.execute(stmt)).all():
            keys, version, base, row_scale = tuple(row[:n]), row[n], bool(row[n + 1]), row[n + 2]
            p = partials.setdefault((keys, version, base), Partial(keys, version, base))
            p.reporting_currency = p.reporting_currency or row[n + 3]
            p.requests += row[n + 4]
            p.input_tokens += int(row[n + 5] or 0)
            p.cached_input_tokens += int(row[n + 6] or 0)
            p.cache_write_tokens += int(row[n + 7] or 0)
            p.output_tokens += int(row[n + 8] or 0)
            if row_scale != BASE_SCALE:
                wide.add((keys, version, base))  # its pieces are not the 18-decimal layout: re-summed below
                continue
            for i, m in enumerate(SUMMED_MONEY):
                start = n + 9 + i * width
                p.money[m] = EXACT.add(p.money[m], _combine(row[start:start + width], dialect))
        if wide:
            await _add_wide_rows(conn, window, groups, partials)
    return list(partials.values())


async def _add_wide_rows(conn: AsyncConnection, window: Window,
                         groups: list[sa.Label[Any]], partials: dict[tuple[Any, ...], Partial]) -> None:
    """Exact Python sums for the rare rows whose money has more than 18 decimals (SQLite only)."""
    stmt = sa.select(*groups, ledger.c.price_version, ledger.c.baseline_cost.is_not(None),
                     *(ledger.c[m] for m in SUMMED_MONEY)).where(
        _in_window(window), ledger.c.money_scale != BASE_SCALE)
    n = len(groups)
    for row in (await conn.execute(stmt)).all():
        p = partials[(tuple(row[:n]), row[n], bool(row[n + 1]))]
        for i, m in enumerate(SUMMED_MONEY):
            if row[n + 2 + i] is not None:
                p.money[m] = EXACT.add(p.money[m], row[n + 2 + i])


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What re-pricing needs of one ledger row."""

    team: str
    key_id: str | None
    route: str
    provider: str
    model: str
    started_at: datetime
    price_version: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    total_cost_reporting: Decimal | None
    reporting_currency: str | None
    cache_write_tokens: int = 0
    api: str = "chat"


async def stream_usage(engine: AsyncEngine, window: Window, batch: int = 5000) -> AsyncIterator[UsageRow]:
    """Every row of the window, streamed (a month can be millions of rows)."""
    cols = [ledger.c[f] for f in UsageRow.__dataclass_fields__]
    stmt = sa.select(*cols).where(_in_window(window)).order_by(ledger.c.started_at)
    async with engine.connect() as conn:
        result = await conn.stream(stmt.execution_options(yield_per=batch))
        async for part in result.partitions(batch):
            for row in part:
                yield UsageRow(*row)
