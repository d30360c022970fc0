"""The deployments table `gateway check-config` prints."""

from __future__ import annotations

from gateway.config.schema import Config

_HEADER = ("provider", "model", "upstream", "mode", "context", "quality", "price")
_RIGHT = {"context", "quality"}


def deployments_table(cfg: Config) -> str:
    rows = []
    for d in cfg.deployments:
        p = d.price
        price = f"{p.input}/{p.output} {p.currency} per {p.per}"
        if p.cached_input is not None:
            price += f", cached {p.cached_input}"
        if p.cache_write is not None:
            price += f", cache write {p.cache_write}"
        if p.tiers:
            price += f", {len(p.tiers)} tiers"
        if p.off_peak:
            price += f", {len(p.off_peak)} off-peak windows"
        rows.append((d.provider, d.model, d.upstream_model or d.model, d.mode, str(d.context_window),
                     str(d.quality), price))
    # Columns as wide as their longest cell, so long provider or model names never run into the next column.
    widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if name in _RIGHT else c.ljust(w) for name, c, w in zip(_HEADER, cells, widths)]
        return "  ".join(parts) + "  " + cells[-1]

    header = line(_HEADER)
    return "\n".join([header, "-" * len(header), *map(line, rows)])
