"""Daily roll-ups of closed ledger days: what makes a month's report over millions of rows fast.

A UTC day is rolled up once it is closed: it ended longer ago than a row can stay open (the recovery horizon),
none of its rows is `in_flight`, and all its money has the ledger's base scale. Its rows are summed by the same
query a report runs (`queries.fetch_partials`, grouped by day and every column the roll-up keeps) and stored per
(day, team, route, provider, model, api, price version, baseline presence) with the day's row count, counted *before*
summing.

Reports (`fetch_partials`) read the roll-up for the longest run of rolled-up whole days inside their window and
the ledger itself for the rest, and merge the two exactly. Ledger rows are never deleted and a closed row never
changes, so a day's row count is its fingerprint: before the roll-up is used, the ledger's count over the run must
equal the recorded counts (one index range count), else the report reads the ledger alone. A row that arrives late
for a rolled-up day (e.g. replayed from a spool after a database outage) therefore never goes missing from a
report, and the roller re-rolls that day on its next pass. Reports grouped or filtered by key, or bucketed at a
non-UTC offset, read the ledger directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger import queries as Q
from gateway.ledger.tables import BASE_SCALE, UtcDateTime, ledger
from gateway.money import EXACT

log = logging.getLogger(__name__)

DIMS = ("team", "route", "provider", "model", "api")
COUNTS = ("requests", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
MONEY = ("input_cost_reporting", "cached_input_cost_reporting", "cache_write_cost_reporting", "output_cost_reporting",
         "baseline_cost")
RECHECK_DAYS = 40  # the roller re-counts this many recent rolled-up days on each pass
MAX_DAYS_PER_PASS = 62
PIECES = ("units", "nano", "atto")  # a money sum as integers: units, decimals 1-9, decimals 10-18
_E9 = Decimal(10) ** 9

_md = sa.MetaData()
rollup_days = sa.Table(
    "ledger_rollup_days", _md,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("rolled_at", UtcDateTime(), nullable=False),
)
rollup = sa.Table(
    "ledger_rollup", _md,
    sa.Column("day", sa.String(10), nullable=False),
    *(sa.Column(d, sa.String(128)) for d in DIMS),
    sa.Column("price_version", sa.Integer, nullable=False),
    sa.Column("has_baseline", sa.Boolean, nullable=False),
    sa.Column("reporting_currency", sa.String(3)),
    *(sa.Column(c, sa.BigInteger, nullable=False) for c in COUNTS),
    *(sa.Column(f"{m}_{piece}", sa.BigInteger, nullable=False) for m in MONEY for piece in PIECES),
)


def _utc_day(d: date) -> datetime:
    return datetime.combine(d, time.min, timezone.utc)


def covers_ledger() -> bool:
    """Whether the roll-up table keeps every sum a report adds up. A ledger that gained a token direction or a
    money column the roll-up lacks is read directly until a migration extends the roll-up (never half-summed)."""
    return set(Q.COUNT_FIELDS) <= set(COUNTS) and set(Q.SUMMED_MONEY) <= set(MONEY)


def usable(group_by: Sequence[str], filters: Mapping[str, str] | None, window: Q.Window) -> bool:
    """Whether a report can be answered from roll-ups (UTC buckets, no per-key grouping or filter)."""
    return covers_ledger() and (window.offset == timedelta(0) and all(g in ("day", "month", *DIMS) for g in group_by)
            and all(f in DIMS for f in (filters or {})))


# ------------------------------------------------------------------------------------------------ reading
async def rolled_span(engine: AsyncEngine, window: Q.Window) -> tuple[datetime, datetime] | None:
    """The longest run of rolled-up whole days inside `window` whose row counts still match the ledger."""
    first = window.start.astimezone(timezone.utc)
    first_day = first.date() + (timedelta(days=1) if first.time() != time.min else timedelta(0))
    end_day = window.end.astimezone(timezone.utc).date()
    if end_day <= first_day:
        return None
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(rollup_days.c.day, rollup_days.c.row_count)
            .where(rollup_days.c.day >= first_day.isoformat(), rollup_days.c.day < end_day.isoformat())
            .order_by(rollup_days.c.day))).all()
        best: list[tuple[date, int]] = []
        run: list[tuple[date, int]] = []
        for day_text, count in rows:
            d = date.fromisoformat(day_text)
            run = run + [(d, count)] if run and run[-1][0] + timedelta(days=1) == d else [(d, count)]
            if len(run) > len(best):
                best = run
        if not best:
            return None
        start, end = _utc_day(best[0][0]), _utc_day(best[-1][0] + timedelta(days=1))
        actual = (await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(
            ledger.c.started_at >= start, ledger.c.started_at < end))).scalar_one()
    if actual != sum(c for _, c in best):
        log.info("ledger roll-up for %s..%s is behind the ledger (%d rows vs %d): reading the ledger", start.date(),
                 end.date(), actual, sum(c for _, c in best))
        return None
    return start, end


def _group(name: str) -> sa.ColumnElement[Any]:
    if name == "day":
        return rollup.c.day
    if name == "month":
        return sa.func.substr(rollup.c.day, 1, 7, type_=sa.String)
    return rollup.c[name]


async def fetch_rolled(engine: AsyncEngine, start: datetime, end: datetime, group_by: Sequence[str],
                       filters: Mapping[str, str] | None) -> list[Q.Partial]:
    groups = [_group(g).label(f"g{i}") for i, g in enumerate(group_by)]
    where = [rollup.c.day >= start.date().isoformat(), rollup.c.day < end.date().isoformat(),
             *(rollup.c[k] == v for k, v in sorted((filters or {}).items()))]
    stmt = (sa.select(*groups, rollup.c.price_version, rollup.c.has_baseline,
                      sa.func.max(rollup.c.reporting_currency), *(sa.func.sum(rollup.c[c]) for c in COUNTS),
                      *(sa.func.sum(rollup.c[f"{m}_{piece}"]) for m in Q.SUMMED_MONEY for piece in PIECES))
            .where(*where).group_by(*groups, rollup.c.price_version, rollup.c.has_baseline))
    n, out = len(groups), []
    async with engine.connect() as conn:
        for row in (await conn.execute(stmt)).all():
            p = Q.Partial(tuple(row[:n]), row[n], bool(row[n + 1]), row[n + 2])
            for i, c in enumerate(COUNTS):
                setattr(p, c, int(row[n + 3 + i] or 0))
            for i, m in enumerate(Q.SUMMED_MONEY):
                first = n + 3 + len(COUNTS) + i * len(PIECES)
                p.money[m] = Q.combine(row[first:first + len(PIECES)], "sqlite")  # the same three pieces
            out.append(p)
    return out


# ------------------------------------------------------------------------------------------------ writing
def pieces(amount: Decimal) -> tuple[int, int, int]:
    """A non-negative sum with at most 18 decimals as (units, decimals 1-9, decimals 10-18); exact or ValueError."""
    units = int(amount)
    nano_full = EXACT.multiply(EXACT.subtract(amount, Decimal(units)), _E9)
    nano = int(nano_full)
    atto_full = EXACT.multiply(EXACT.subtract(nano_full, Decimal(nano)), _E9)
    if amount < 0 or atto_full != int(atto_full):
        raise ValueError(f"{amount} is not a non-negative amount with at most 18 decimals")
    return units, nano, int(atto_full)


async def roll_up_day(engine: AsyncEngine, day: date) -> bool:
    """Roll up one closed day; False (nothing stored) while it has open rows or money beyond the base scale."""
    start, end = _utc_day(day), _utc_day(day + timedelta(days=1))
    in_day = sa.and_(ledger.c.started_at >= start, ledger.c.started_at < end)
    async with engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(in_day))).scalar_one()
        blocking = (await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(
            in_day, sa.or_(ledger.c.status == "in_flight", ledger.c.money_scale != BASE_SCALE)))).scalar_one()
    if blocking:
        return False
    # Counted before summing: a row that lands in between makes the count short, never the sums.
    parts = await Q.fetch_partials(engine, Q.Window(start, end), ("day", *DIMS), use_rollup=False)
    try:
        values = [{"day": p.keys[0], **dict(zip(DIMS, p.keys[1:])), "price_version": p.price_version,
                   "has_baseline": p.has_baseline, "reporting_currency": p.reporting_currency,
                   **{c: getattr(p, c) for c in COUNTS},
                   **{f"{m}_{piece}": v for m in Q.SUMMED_MONEY for piece, v in zip(PIECES, pieces(p.money[m]))}}
                  for p in parts]
    except ValueError:  # a sum the pieces cannot hold exactly: the day stays in the ledger only
        return False
    try:
        async with engine.begin() as conn:
            await conn.execute(rollup.delete().where(rollup.c.day == day.isoformat()))
            await conn.execute(rollup_days.delete().where(rollup_days.c.day == day.isoformat()))
            if values:
                await conn.execute(rollup.insert(), values)
            await conn.execute(rollup_days.insert().values(day=day.isoformat(), row_count=count,
                                                           rolled_at=datetime.now(timezone.utc)))
    except IntegrityError:  # another replica rolled the same day up at the same moment: its copy stands
        return False
    return True


async def forget_changed_days(engine: AsyncEngine, today: date) -> list[date]:
    """Drop the roll-up of recent days whose ledger row count changed since (late rows): they are rolled again."""
    since = (today - timedelta(days=RECHECK_DAYS)).isoformat()
    changed = []
    async with engine.connect() as conn:
        rolled = (await conn.execute(sa.select(rollup_days.c.day, rollup_days.c.row_count)
                                     .where(rollup_days.c.day >= since))).all()
        for day_text, count in rolled:
            d = date.fromisoformat(day_text)
            actual = (await conn.execute(sa.select(sa.func.count()).select_from(ledger).where(
                ledger.c.started_at >= _utc_day(d), ledger.c.started_at < _utc_day(d + timedelta(days=1))))
            ).scalar_one()
            if actual != count:
                changed.append(d)
    if changed:
        async with engine.begin() as conn:
            for d in changed:
                await conn.execute(rollup.delete().where(rollup.c.day == d.isoformat()))
                await conn.execute(rollup_days.delete().where(rollup_days.c.day == d.isoformat()))
    return changed


async def roll_up_closed(engine: AsyncEngine, now: datetime, settle_s: float,
                         max_days: int = MAX_DAYS_PER_PASS) -> int:
    """Roll up the days that closed (ended more than `settle_s` ago) and are not rolled up yet. -> days done."""
    if not covers_ledger():
        return 0
    closed_before = (now - timedelta(seconds=settle_s)).astimezone(timezone.utc).date()
    await forget_changed_days(engine, closed_before)
    async with engine.connect() as conn:
        oldest = (await conn.execute(sa.select(sa.func.min(ledger.c.started_at)))).scalar_one()
        done = set((await conn.execute(sa.select(rollup_days.c.day))).scalars().all())
    if oldest is None:
        return 0
    day, rolled = oldest.astimezone(timezone.utc).date() if oldest.tzinfo else oldest.date(), 0
    while day < closed_before and rolled < max_days:
        if day.isoformat() not in done and await roll_up_day(engine, day):
            rolled += 1
        day += timedelta(days=1)
    return rolled


class Roller:
    """`gateway serve`'s background roller: a pass shortly after start-up, then every `interval_s`."""

    def __init__(self, engine: AsyncEngine, settle_s: float, interval_s: float = 300.0) -> None:
        self._engine, self._settle_s, self._interval_s = engine, settle_s, interval_s
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        await asyncio.sleep(1.0)
        while True:
            try:
                await roll_up_closed(self._engine, datetime.now(timezone.utc), self._settle_s)
            except Exception as e:  # the database may be briefly unavailable: reports read the ledger meanwhile
                log.warning("rolling up closed ledger days failed (%s); trying again later", type(e).__name__)
            await asyncio.sleep(self._interval_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-rollup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
