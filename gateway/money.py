"""Exact money arithmetic and its text form: the one place that defines both.

Python's default decimal context keeps 28 significant digits and rounds silently beyond them. Money never goes
through it: products and sums use `EXACT`, which has room for any digits and traps instead of rounding (it is
never used to divide, and dividing by a power of ten is done with `scaleb`, which is exact).
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation

EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact])


def money_str(amount: Decimal) -> str:
    """Plain decimal text, exact, without exponent or trailing zeros: 0.0005005, 0, 12.5."""
    if not amount:
        return "0"
    return format(EXACT.normalize(amount), "f")
