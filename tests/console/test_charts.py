"""Server-side SVG charts: names are escaped, bars stack to the day's total, steps follow the price versions."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal

from gateway.console.charts import Bars, stacked_bars, step_chart

EVIL = '<script>alert("x")</script>'


def test_stacked_bars_escape_series_names_and_stack_to_the_total() -> None:
    data = Bars(["2026-11-01", "2026-11-02"], [EVIL, "b"],
                {("2026-11-01", EVIL): Decimal("3"), ("2026-11-01", "b"): Decimal("1"),
                 ("2026-11-02", "b"): Decimal("2")})
    svg = str(stacked_bars(data, "CNY"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert len(heights) == 3
    assert abs((heights[0] + heights[1]) / heights[2] - 2.0) < 0.01  # day 1 (4) is twice day 2 (2)
    assert "2026-11-01 b: 1 CNY" in svg  # exact amounts in the tooltips


def test_no_days_is_a_plain_message() -> None:
    assert "No requests" in str(stacked_bars(Bars([], [], {}), "CNY"))


def test_step_chart_draws_one_step_per_change_and_escapes_names() -> None:
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    series = {EVIL: [(datetime(1970, 1, 1, tzinfo=timezone.utc), Decimal("0.002")),
                     (datetime(2026, 12, 1, tzinfo=timezone.utc), Decimal("0.001"))]}
    svg = str(step_chart(series, now, EVIL))
    assert "<script>" not in svg
    path = re.search(r'<path d="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    assert path.count("V") == 1 and path.startswith("M")
    assert "2026-11-" in svg  # the axis starts shortly before the first real change, not in 1970
