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

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ledger.tables import BASE_SCALE, ledger
from gateway.money import EXACT

GROUP_BY_CHOICES = ("day", "month", "team", "key", "route", "provider", "model", "api")
# Columns a report can be narrowed to one value of (the console's filters).
FILTER_CHOICES = ("team", "key", "route", "provider", "model", "api")
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


# requests and every token count (whatever directions the ledger records): the Partial fields that add up
COUNT_FIELDS = tuple(f.name for f in fields(Partial) if f.type in ("int", int) and f.name != "price_version")


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


def money_sums(col: sa.ColumnElement[Any], dialect: str) -> list[sa.ColumnElement[Any]]:
    """The SQL sums of one money column (fixed-point text on SQLite: three int64 pieces; NUMERIC on PostgreSQL)."""
    if dialect == "postgresql":
        return [sa.func.sum(col)]
    raw = sa.type_coerce(col, sa.String)  # the stored text, not the Decimal the column type would return
    return [
        sa.func.sum(sa.cast(raw, sa.BigInteger)),
        sa.func.sum(sa.cast(sa.func.substr(raw, -18, 9), sa.BigInteger)),
        sa.func.sum(sa.cast(sa.func.substr(raw, -9), sa.BigInteger)),
    ]


def combine(values: Sequence[Any], dialect: str) -> Decimal:
    """The exact sum from `money_sums`' results."""
    if dialect == "postgresql":
        return _ZERO if values[0] is None else Decimal(values[0])
    whole, hi, lo = (0 if v is None else int(v) for v in values)
    # One integer of 1e-18 units, then an exact shift of the exponent (no rounding: EXACT traps instead).
    return Decimal(whole * 10**18 + hi * 10**9 + lo).scaleb(-18, EXACT)


Filters = Mapping[str, str]


def _in_window(window: Window, filters: Filters | None = None) -> sa.ColumnElement[bool]:
    """Rows of the window, narrowed to `filters` ({column: value}; names from FILTER_CHOICES)."""
    clauses = [ledger.c.started_at >= window.start, ledger.c.started_at < window.end]
    for name, value in sorted((filters or {}).items()):
        if name not in FILTER_CHOICES:
            raise ValueError(f"unknown filter {name!r} (choose from {', '.join(FILTER_CHOICES)})")
        clauses.append(ledger.c["key_id" if name == "key" else name] == value)
    return sa.and_(*clauses)


async def fetch_partials(engine: AsyncEngine, window: Window, group_by: Sequence[str],
                         filters: Filters | None = None, *, use_rollup: bool = True) -> list[Partial]:
    """Per-group sums over the window (narrowed to `filters`). Whole UTC days that are rolled up
    (`gateway/ledger/rollup.py`) are read from their roll-up, the rest from the ledger; the two merge exactly."""
    from gateway.ledger import rollup

    if use_rollup and rollup.usable(group_by, filters, window):
        span = await rollup.rolled_span(engine, window)
        if span is not None:
            parts = await rollup.fetch_rolled(engine, *span, group_by, filters)
            rest = [Window(start, end, window.offset) for start, end in ((window.start, span[0]),
                                                                         (span[1], window.end)) if end > start]
            if not rest:
                return parts  # already one per (keys, version, baseline): the roll-up query grouped them
            for sub in rest:
                parts += await _fetch_ledger(engine, sub, group_by, filters)
            return merge(parts)
    return await _fetch_ledger(engine, window, group_by, filters)


def merge(partials: Iterable[Partial], keys: Callable[[Partial], tuple[Any, ...]] | None = None) -> list[Partial]:
    """Partials with the same keys (or `keys(p)`), price version and baseline presence added up exactly into
    one. The inputs are left as they are: the results are new objects."""
    merged: dict[tuple[Any, ...], Partial] = {}
    for p in partials:
        k = p.keys if keys is None else keys(p)
        m = merged.get((k, p.price_version, p.has_baseline))
        if m is None:
            m = merged[(k, p.price_version, p.has_baseline)] = Partial(k, p.price_version, p.has_baseline,
                                                                        p.reporting_currency, money=dict(p.money))
            for f in COUNT_FIELDS:
                setattr(m, f, getattr(p, f))
            continue
        m.reporting_currency = m.reporting_currency or p.reporting_currency
        for f in COUNT_FIELDS:
            setattr(m, f, getattr(m, f) + getattr(p, f))
        money = m.money
        for name, amount in p.money.items():
            money[name] = EXACT.add(money[name], amount) if name in money else amount
    return list(merged.values())


async def _fetch_ledger(engine: AsyncEngine, window: Window, group_by: Sequence[str],
                        filters: Filters | None = None) -> list[Partial]:
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
            *(e for m in SUMMED_MONEY for e in money_sums(ledger.c[m], dialect)),
        )
        .where(_in_window(window, filters))
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
                p.money[m] = EXACT.add(p.money[m], combine(row[start:start + width], dialect))
        if wide:
            await _add_wide_rows(conn, window, groups, partials, filters)
    return list(partials.values())


async def _add_wide_rows(conn: AsyncConnection, window: Window,
                         groups: list[sa.Label[Any]], partials: dict[tuple[Any, ...], Partial],
                         filters: Filters | None = None) -> None:
    """Exact Python sums for the rare rows whose money has more than 18 decimals (SQLite only)."""
    stmt = sa.select(*groups, ledger.c.price_version, ledger.c.baseline_cost.is_not(None),
                     *(ledger.c[m] for m in SUMMED_MONEY)).where(
        _in_window(window, filters), ledger.c.money_scale != BASE_SCALE)
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


async def recent_requests(engine: AsyncEngine, limit: int) -> list[tuple[str, int, int]]:
    """(route, prompt tokens, output tokens) of the newest successful requests (newest first): the sample a
    price-change preview re-ranks. Prompt tokens count cached and cache-write ones too (the router prices a prompt as a whole)."""
    stmt = (sa.select(ledger.c.route, ledger.c.input_tokens, ledger.c.cached_input_tokens,
                      ledger.c.cache_write_tokens, ledger.c.output_tokens)
            .where(ledger.c.status == "success").order_by(ledger.c.started_at.desc()).limit(limit))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [(r[0], int(r[1] or 0) + int(r[2] or 0) + int(r[3] or 0), int(r[4] or 0)) for r in rows]
