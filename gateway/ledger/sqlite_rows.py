"""Ledger rows as stdlib-sqlite3 parameters, stored in exactly the format SQLAlchemy's column types use (money
text, naive UTC times, booleans as 0/1), so every reader sees the same rows (tests/ledger/test_writer.py checks
parity). This runs for every write of the request path, hence the generated functions.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa

from gateway.domain import ZERO, Cost, LedgerEntry
from gateway.ledger.tables import BASE_SCALE, UPDATABLE, Money, UtcDateTime, ledger, money_text

_UTC = timezone.utc


def sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"ledger times must be timezone-aware datetimes, got {value!r}")
    if value.tzinfo is not _UTC:
        value = value.astimezone(_UTC)
    # What isoformat(" ", "microseconds") of the naive UTC time gives (years 1-9999), at half its cost.
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (value.year, value.month, value.day, value.hour, value.minute,
                                                  value.second, value.microsecond)


def _sqlite_money(value: Any) -> str | None:
    return None if value is None else _sqlite_money_text(value)


def _sqlite_money_text(value: Any) -> str:
    if type(value) is Decimal:  # the common case: no conversion needed
        return money_text(value)
    if isinstance(value, float) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"money must be Decimal, got {type(value).__name__}")
    return money_text(Decimal(value))


def _sqlite_bool(value: Any) -> int | None:
    return None if value is None else int(bool(value))


Converters = list[tuple[str, Callable[[Any], Any] | None]]


def _converter(column: sa.Column[Any]) -> Callable[[Any], Any] | None:
    if isinstance(column.type, Money):
        return _sqlite_money
    if isinstance(column.type, UtcDateTime):
        return sqlite_time
    if isinstance(column.type, sa.Boolean):
        return _sqlite_bool
    return None


_INSERT_COLUMNS = [c for c in ledger.columns if c.name != "id"]
INSERT_SQL = (f"INSERT INTO ledger ({', '.join(c.name for c in _INSERT_COLUMNS)}) "
              f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})")
INSERT_CONV: Converters = [(c.name, _converter(c)) for c in _INSERT_COLUMNS]
UPDATE_SQL = f"UPDATE ledger SET {', '.join(f'{c} = ?' for c in UPDATABLE)} WHERE request_id = ?"
UPDATE_CONV: Converters = [(c, _converter(ledger.c[c])) for c in (*UPDATABLE, "request_id")]


def sqlite_params(values: dict[str, Any], conv: Converters) -> tuple[Any, ...]:
    """The statement parameters of one row (`values` may hold more columns than `conv` names)."""
    compiled = _COMPILED.get(id(conv))
    if compiled is None:
        return tuple(values.get(name) if f is None else f(values.get(name)) for name, f in conv)
    return compiled(values)


def _compile(conv: Converters) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """`sqlite_params` for one fixed column list as one generated function (a tuple display, no generator):
    a third of the cost, and this runs twice per request."""
    env: dict[str, Any] = {}
    items = []
    for i, (name, f) in enumerate(conv):
        if f is None:
            items.append(f"g({name!r})")
        else:
            env[f"f{i}"] = f
            items.append(f"f{i}(g({name!r}))")
    src = "def params(values):\n    g = values.get\n    return (" + ", ".join(items) + ",)\n"
    exec(src, env)  # noqa: S102 - the source is built from the table's own column names
    fn: Callable[[dict[str, Any]], tuple[Any, ...]] = env["params"]
    return fn


_COMPILED = {id(INSERT_CONV): _compile(INSERT_CONV), id(UPDATE_CONV): _compile(UPDATE_CONV)}


# ---- rows straight from a LedgerEntry: the request path's two writes, without the column dict -----------------

_MONEY_FIELDS = ("currency", "input_cost", "cached_input_cost", "output_cost", "total_cost", "cache_write_cost",
                 "reporting_currency", "fx_rate", "input_cost_reporting", "cached_input_cost_reporting",
                 "output_cost_reporting", "total_cost_reporting", "cache_write_cost_reporting", "baseline_cost",
                 "money_scale")
_NO_MONEY: tuple[Any, ...] = (None,) * 14 + (BASE_SCALE,)
_ZERO_TEXT = money_text(ZERO)
_ZERO_AT: dict[str, str] = {}  # fx_rate text -> the text of 0 x fx_rate


def _zero_at(fx: str) -> str:
    """The stored text of 0 x fx: the product keeps fx's exponent, so it has as many decimals as fx's own text."""
    if len(_ZERO_AT) >= 256:  # rates come from price versions: few; this bounds a caller that makes many
        _ZERO_AT.clear()
    text = _ZERO_AT[fx] = "0." + "0" * (len(fx) - fx.index(".") - 1)
    return text


def _money_row(cost: Cost | None, baseline: Decimal | None) -> tuple[Any, ...]:
    """The money columns (`_MONEY_FIELDS`) as stored: each value's text computed once, and the row's scale read
    off those texts (money_text pads each to the scale `row_scale` would give it; fx_rate is never summed)."""
    if cost is None and baseline is None:
        return _NO_MONEY
    m = _sqlite_money_text
    texts: tuple[str, ...] = ()  # the distinct summed texts: they decide the row's scale
    if cost is not None:
        fx = m(cost.fx_rate)
        one = str(cost.fx_rate) == "1"  # billed in the reporting currency: x * 1 is x, digit for digit (not x * 1.0)
        written = cost.cache_write
        if written is ZERO:  # nothing written to a prompt cache (pricing's zero): its texts without arithmetic
            cw = _ZERO_TEXT
            cw_rep = cw if one else (_ZERO_AT.get(fx) or _zero_at(fx))
        else:
            cw = m(written)
            cw_rep = cw if one else m(cost.cache_write_reporting)
        texts = own = (m(cost.input), m(cost.cached_input), m(cost.output), m(cost.total), cw)
        if one:
            head: tuple[Any, ...] = (cost.currency, *own, cost.reporting_currency, fx, *own)
        else:
            rep = (m(cost.input_reporting), m(cost.cached_input_reporting), m(cost.output_reporting),
                   m(cost.total_reporting), cw_rep)
            head = (cost.currency, *own, cost.reporting_currency, fx, *rep)
            texts = own + rep
    else:
        head = (None,) * 13
    base = None if baseline is None else m(baseline)
    scale = BASE_SCALE
    for text in (*texts, base):
        if text is not None:
            d = len(text) - text.index(".") - 1
            if d > scale:
                scale = d
    return (*head, base, scale)


# How each column of a row is computed from the entry `e`, its usage `u`, its money `mo` (`_money_row`) and the
# write time `now`. Every ledger column must be here: the generated functions below fail at import otherwise.
_ENTRY_EXPR: dict[str, str] = {
    "request_id": "e.request_id", "started_at": "t(e.started_at)",
    "finished_at": "None if e.status == 'in_flight' else t(now)", "replica_id": "e.replica_id", "team": "e.team",
    "key_id": "e.key_id", "route": "e.route", "provider": "e.provider", "model": "e.model",
    "upstream_model": "e.upstream_model", "price_version": "e.price_version", "stream": "1 if e.stream else 0",
    "prompt_tokens_estimate": "e.prompt_tokens_estimate",
    "input_tokens": "u.input_tokens if u else 0", "cached_input_tokens": "u.cached_input_tokens if u else 0",
    "output_tokens": "u.output_tokens if u else 0", "usage_source": "u.source if u else None",
    "cache_write_tokens": "u.cache_write_tokens if u else 0", "api": "e.api",
    "status": "e.status", "attempts": "e.attempts", "latency_ms": "e.latency_ms", "ttft_ms": "e.ttft_ms",
    "error_kind": "e.error_kind",
    **{name: f"mo[{i}]" for i, name in enumerate(_MONEY_FIELDS)},
}


def _compile_entry_row(columns: list[str]) -> Callable[[LedgerEntry, datetime], tuple[Any, ...]]:
    """A function giving exactly `sqlite_params(entry_values(entry, now), conv)` for the columns `conv` names
    (tests/ledger/test_sqlite_rows.py checks that over random entries), at a third of its cost."""
    items = ", ".join(_ENTRY_EXPR[c] for c in columns)
    src = ("def row(e, now):\n    u = e.usage\n    mo = money(e.cost, e.baseline_cost)\n"
           f"    return ({items},)\n")
    env: dict[str, Any] = {"t": sqlite_time, "money": _money_row}
    exec(src, env)  # noqa: S102 - the source is built from the table's own column names
    fn: Callable[[LedgerEntry, datetime], tuple[Any, ...]] = env["row"]
    return fn


insert_row = _compile_entry_row([name for name, _ in INSERT_CONV])
update_row = _compile_entry_row([name for name, _ in UPDATE_CONV])
