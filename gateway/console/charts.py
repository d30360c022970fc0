"""Inline SVG charts rendered on the server: a stacked bar chart (spend by day) and a step chart (a price over
time). Pure functions from plain data to markup; every label is escaped (names are user-controlled).

Bar heights are screen geometry, so floats are fine here; the exact amounts are in each bar's tooltip and in the
tables next to the charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Mapping, Sequence

from markupsafe import Markup, escape

from gateway.money import money_str

# Eight distinguishable colours (Okabe-Ito, colour-blind safe); more series than that reuse them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
W, H, LEFT, BOTTOM, TOP = 760, 260, 64, 36, 12


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _axis_label(value: float) -> str:
    """Plain decimals (0.0000625, not 6.25e-05): these are money amounts."""
    return format(Decimal(f"{value:.4g}").normalize(), "f") if value else "0"


@dataclass(frozen=True, slots=True)
class Bars:
    days: Sequence[str]  # x categories, in order
    series: Sequence[str]  # stack names, bottom first
    values: dict[tuple[str, str], Decimal]  # (day, series) -> amount


def stacked_bars(data: Bars, currency: str) -> Markup:
    if not data.days:
        return Markup('<p class="empty">No requests in this period.</p>')
    totals = {d: sum((v for (day, _), v in data.values.items() if day == d), Decimal(0)) for d in data.days}
    top = _nice_max(float(max(totals.values())))
    plot_w, plot_h = W - LEFT - 8, H - BOTTOM - TOP
    slot = plot_w / len(data.days)
    bar = min(48.0, max(1.0, slot * 0.7))
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="spend by day">']
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f'{escape(_axis_label(top * i / 4))}</text>')
    label_every = max(1, len(data.days) // 12)
    for i, day in enumerate(data.days):
        x = LEFT + i * slot + (slot - bar) / 2
        y = TOP + plot_h
        for j, name in enumerate(data.series):
            amount = data.values.get((day, name))
            if not amount:
                continue
            h = plot_h * float(amount) / top
            y -= h
            tip = f"{day} {name}: {money_str(amount)} {currency}"
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" class="c{j % len(PALETTE)}">'
                         f'<title>{escape(tip)}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{H - BOTTOM + 16}" class="axis" text-anchor="middle">'
                         f'{escape(day[5:])}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><i class="c{j % len(PALETTE)}"></i>{escape(name or "(none)")}</span>'
                     for j, name in enumerate(data.series))
    return Markup("".join(parts) + f'<div class="legend">{legend}</div>')


def step_chart(series: Mapping[str, Sequence[tuple[datetime, Decimal]]], now: datetime, label: str) -> Markup:
    """Prices over time, one line per series: each value holds until the next point; the lines run on to `now`
    (or past the last point, when one is scheduled in the future), marked by a vertical rule."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return Markup('<p class="empty">No price history.</p>')
    w, h, left, bottom, top_pad = 380, 130, 52, 22, 8
    # The seed version is in force "from 1970": an axis from there would squeeze every real change into the right
    # edge. The axis starts a little before the first real change (or a day before now), older values held there.
    real = [t.timestamp() for t, _ in points if t.year > 1970]
    end = max([now.timestamp(), *real])
    first = min(real, default=now.timestamp() - 86400)
    start = first - max((end - first) * 0.15, 3600.0)
    end += max((end - start) * 0.08, 60.0)
    top = _nice_max(float(max(v for _, v in points)))
    plot_w, plot_h = w - left - 6, h - bottom - top_pad

    def px(t: float) -> float:
        return left + plot_w * (max(t, start) - start) / (end - start)

    def py(v: Decimal) -> float:
        return top_pad + plot_h - plot_h * float(v) / top

    parts = [f'<svg class="step" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(label)}">',
             f'<line x1="{left}" x2="{w - 6}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" class="grid"/>',
             f'<text x="{left - 4}" y="{top_pad + 8}" class="axis" text-anchor="end">{escape(_axis_label(top))}</text>',
             f'<text x="{left - 4}" y="{top_pad + plot_h}" class="axis" text-anchor="end">0</text>',
             f'<line x1="{px(now.timestamp()):.1f}" x2="{px(now.timestamp()):.1f}" y1="{top_pad}" '
             f'y2="{top_pad + plot_h}" class="now"/>']
    for j, (name, pts) in enumerate(series.items()):
        path = [f"M{px(t.timestamp()):.1f} {py(v):.1f}" if i == 0 else f"H{px(t.timestamp()):.1f} V{py(v):.1f}"
                for i, (t, v) in enumerate(pts)]
        parts.append(f'<path d="{" ".join(path)} H{px(end):.1f}" class="line s{j % len(PALETTE)}"/>')
        parts.extend(f'<circle cx="{px(t.timestamp()):.1f}" cy="{py(v):.1f}" r="2.5" class="s{j % len(PALETTE)}">'
                     f'<title>{escape(f"{name} from {t.isoformat()}: {money_str(v)}")}</title></circle>'
                     for t, v in pts)
    parts.append(f'<text x="{left}" y="{h - 6}" class="axis">{escape(datetime.fromtimestamp(start, timezone.utc).date().isoformat())}'
                 f'</text><text x="{w - 6}" y="{h - 6}" class="axis" text-anchor="end">now</text></svg>')
    legend = "".join(f'<span class="key"><i class="c{j % len(PALETTE)}"></i>{escape(name)}</span>'
                     for j, name in enumerate(series))
    return Markup("".join(parts) + f'<div class="legend">{legend}</div>')
