"""The ledger's tables and the two column types that make it exact on both backends.

Money: PostgreSQL stores it as `NUMERIC` (exact, summed server-side by `SUM`). SQLite has no exact numeric type
(its NUMERIC affinity turns '0.0000056' into a REAL), so there money is fixed-point decimal *text* with 18
decimals ('0.000005600000000000'), which SQL can sum exactly as three int64 sums (integer part, decimals 1-9,
decimals 10-18; see `queries.py`). A value needing more than 18 decimals is still stored exactly, padded to 27,
36, ... decimals, and its row's `money_scale` says so, so a report sums those rows by a slower exact path
instead. Scaled int64 was rejected: at 1e-12 units a per-group SUM overflows at ~9.2 million, and costs such as
a USD per-token price times a 4-decimal FX rate need more than 12 decimals to be exact.

Times: UTC. SQLite stores naive UTC text ('2026-11-01 00:00:00.000000', which sorts as time), PostgreSQL
`timestamptz`; both come back as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from gateway.domain import Cost, LedgerEntry

BASE_SCALE = 18  # decimals of money text on SQLite; larger scales are multiples of 9
_PIECE = 9

STATUSES = (
    "in_flight", "success", "upstream_error", "client_error", "client_disconnected", "interrupted", "stream_error",
)


def scale_of_decimals(d: int) -> int:
    """The stored scale for `d` decimals: 18, or the next multiple of 9 that holds them."""
    return BASE_SCALE if d <= BASE_SCALE else -(-d // _PIECE) * _PIECE


def decimals_of(value: Decimal) -> int:
    text = str(value)  # plain 'ddd.ddd' unless the exponent is positive or small (then scientific: ask as_tuple)
    if "E" not in text:
        return len(text.partition(".")[2])
    exp = value.as_tuple().exponent
    return max(0, -int(exp))  # type: ignore[arg-type]


def scale_for(value: Decimal) -> int:
    """The fixed-point scale `value` is stored at: 18, or the next multiple of 9 that holds it exactly."""
    return scale_of_decimals(decimals_of(value))


def row_scale(*values: Decimal | None) -> int:
    d = 0
    for v in values:
        if v is not None:
            n = decimals_of(v)
            if n > d:
                d = n
    return scale_of_decimals(d)


def money_text(value: Decimal) -> str:
    """Exact fixed-point text: no exponent, at least 18 decimals. Money is never negative in the ledger.

    Ten of these run per completed row, so the common case takes `str()` (a third of `format(value, 'f')`'s
    cost); `str` switches to an exponent for positive exponents and below 1E-6, which take the general path."""
    if not value.is_finite():
        raise ValueError(f"ledger money must be a finite, non-negative decimal, got {value!r}")
    text = str(value)
    if "E" in text or text[0] == "-":
        return _money_text_general(value)
    dot = text.find(".")
    if dot < 0:
        return text + _PAD_DOT
    d = len(text) - dot - 1
    if d <= BASE_SCALE:
        return text + _PADS[d]
    return text.ljust(dot + 1 + scale_of_decimals(d), "0")


def _money_text_general(value: Decimal) -> str:
    if value < 0:
        raise ValueError(f"ledger money must be a finite, non-negative decimal, got {value!r}")
    text = format(value, "f")
    if text.startswith("-"):  # Decimal('-0')
        text = text[1:]
    whole, _, frac = text.partition(".")
    # 'f' keeps every decimal of the exponent, so len(frac) == decimals_of(value): scale_for without as_tuple.
    d = len(frac)
    return f"{whole}.{frac.ljust(scale_of_decimals(d), '0')}"


_PAD_DOT = "." + "0" * BASE_SCALE
_PADS = ["0" * (BASE_SCALE - d) for d in range(BASE_SCALE + 1)]


class Money(sa.types.TypeDecorator[Decimal]):
    """Exact decimal: NUMERIC on PostgreSQL, fixed-point text on SQLite. Accepts Decimal (or int), returns Decimal."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.NUMERIC())
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float) or not isinstance(value, (Decimal, int)):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        value = Decimal(value)
        if dialect.name == "postgresql":
            money_text(value)  # same validation on both backends
            return value
        return money_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive input is refused (it would be ambiguous)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"ledger times must be timezone-aware datetimes, got {value!r}")
        utc = value.astimezone(timezone.utc)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a SQLite expression
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()

# BIGINT on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid, so rows are stored in insertion (≈ time)
# order and a month's range scan reads neighbouring pages.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("replica_id", sa.String(128), nullable=False),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("key_id", sa.String(64)),
    sa.Column("route", sa.String(128), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("upstream_model", sa.String(128), nullable=False),
    sa.Column("price_version", sa.Integer, nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("prompt_tokens_estimate", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    # In the deployment's own currency.
    sa.Column("currency", sa.String(3)),
    sa.Column("input_cost", Money()),
    sa.Column("cached_input_cost", Money()),
    sa.Column("output_cost", Money()),
    sa.Column("total_cost", Money()),
    # In the reporting currency of the row's price version (fx_rate: reporting units per 1 unit of `currency`).
    sa.Column("reporting_currency", sa.String(3)),
    sa.Column("fx_rate", Money()),
    sa.Column("input_cost_reporting", Money()),
    sa.Column("cached_input_cost_reporting", Money()),
    sa.Column("output_cost_reporting", Money()),
    sa.Column("total_cost_reporting", Money()),
    sa.Column("baseline_cost", Money()),  # reporting currency; NULL when no savings baseline applied
    sa.Column("money_scale", sa.SmallInteger, nullable=False),
    sa.Column("usage_source", sa.String(16)),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Integer),
    sa.Column("ttft_ms", sa.Integer),
    sa.Column("error_kind", sa.String(32)),
    # Migration 5 (appended, as ALTER TABLE adds them): the inbound API, and the tokens the vendor wrote to its
    # prompt cache with their cost (input + cached_input + cache_write = the vendor's prompt tokens).
    sa.Column("api", sa.String(16), nullable=False, server_default="chat"),  # chat, responses, messages, embeddings
    sa.Column("cache_write_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cache_write_cost", Money()),
    sa.Column("cache_write_cost_reporting", Money()),
    sa.Index("ix_ledger_started_at", "started_at"),
    # Only in-flight rows: tiny, and exactly what recovery scans.
    sa.Index("ix_ledger_in_flight", "replica_id", sqlite_where=sa.text("status = 'in_flight'"),
             postgresql_where=sa.text("status = 'in_flight'")),
)

replicas = sa.Table(
    "ledger_replicas",
    metadata,
    sa.Column("replica_id", sa.String(128), primary_key=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
    sa.Column("stopped_at", UtcDateTime()),
    # The liveness lock this replica holds (migration 4; see gateway/ledger/liveness.py), NULL for none.
    sa.Column("liveness", sa.String(600)),
)


# Columns `finish` may change: the deployment can differ from the one opened (fallback), the rest is the outcome.
UPDATABLE = (
    "route", "provider", "model", "upstream_model", "price_version", "input_tokens", "cached_input_tokens",
    "output_tokens", "currency", "input_cost", "cached_input_cost", "output_cost", "total_cost",
    "reporting_currency", "fx_rate", "input_cost_reporting", "cached_input_cost_reporting",
    "output_cost_reporting", "total_cost_reporting", "baseline_cost", "money_scale", "usage_source", "status",
    "attempts", "latency_ms", "ttft_ms", "error_kind", "finished_at", "cache_write_tokens", "cache_write_cost",
    "cache_write_cost_reporting",
)


def cost_columns(cost: Cost | None, baseline_cost: Decimal | None) -> dict[str, Any]:
    """The money columns of a row: each direction in the deployment's currency and, exactly, in the reporting one."""
    if cost is None and baseline_cost is None:
        return dict(_NO_COST)  # an in-flight row, or a request that ended unpriced
    values: dict[str, Any] = dict.fromkeys(MONEY_COLUMNS)
    values.update(currency=None, reporting_currency=None, fx_rate=None)
    if cost is not None:
        values.update(
            currency=cost.currency, reporting_currency=cost.reporting_currency, fx_rate=cost.fx_rate,
            input_cost=cost.input, cached_input_cost=cost.cached_input, output_cost=cost.output,
            cache_write_cost=cost.cache_write, total_cost=cost.total, input_cost_reporting=cost.input_reporting,
            cached_input_cost_reporting=cost.cached_input_reporting, output_cost_reporting=cost.output_reporting,
            cache_write_cost_reporting=cost.cache_write_reporting, total_cost_reporting=cost.total_reporting,
        )
    values["baseline_cost"] = baseline_cost
    # fx_rate is never summed, so it does not decide the row's scale.
    values["money_scale"] = row_scale(*(values[c] for c in MONEY_COLUMNS))
    return values


MONEY_COLUMNS = (
    "input_cost", "cached_input_cost", "output_cost", "total_cost", "input_cost_reporting",
    "cached_input_cost_reporting", "output_cost_reporting", "total_cost_reporting", "baseline_cost",
    "cache_write_cost", "cache_write_cost_reporting",
)
_NO_COST: dict[str, Any] = {**dict.fromkeys(MONEY_COLUMNS), "currency": None, "reporting_currency": None,
                            "fx_rate": None, "money_scale": BASE_SCALE}


def entry_values(entry: LedgerEntry, now: datetime) -> dict[str, Any]:
    """Every column of the row `entry` describes, `now` being when it is written (a pure function)."""
    usage = entry.usage
    return {
        "request_id": entry.request_id, "started_at": entry.started_at,
        "finished_at": None if entry.status == "in_flight" else now,
        "replica_id": entry.replica_id, "team": entry.team, "key_id": entry.key_id, "route": entry.route,
        "provider": entry.provider, "model": entry.model, "upstream_model": entry.upstream_model,
        "price_version": entry.price_version, "stream": entry.stream,
        "prompt_tokens_estimate": entry.prompt_tokens_estimate,
        "input_tokens": usage.input_tokens if usage else 0,
        "cached_input_tokens": usage.cached_input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "cache_write_tokens": usage.cache_write_tokens if usage else 0,
        "usage_source": usage.source if usage else None, "api": entry.api,
        "status": entry.status, "attempts": entry.attempts, "latency_ms": entry.latency_ms,
        "ttft_ms": entry.ttft_ms, "error_kind": entry.error_kind,
        **cost_columns(entry.cost, entry.baseline_cost),
    }
