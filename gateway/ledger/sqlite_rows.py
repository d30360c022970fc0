"""Ledger rows as stdlib-sqlite3 parameters, stored in exactly the format SQLAlchemy's column types use (money
text, naive UTC times, booleans as 0/1), so every reader sees the same rows (tests/ledger/test_writer.py checks
parity). This runs for every write of the request path, hence the generated functions.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa

from gateway.ledger.tables import UPDATABLE, Money, UtcDateTime, ledger, money_text

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
    if value is None:
        return None
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
