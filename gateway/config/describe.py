"""The deployments table `gateway check-config` prints."""

from __future__ import annotations

from gateway.config.schema import Config


def deployments_table(cfg: Config) -> str:
    header = f"{'provider':<12}{'model':<22}{'upstream':<30}{'mode':<10}{'context':>10}{'quality':>8}  price"
    lines = [header, "-" * len(header)]
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
        lines.append(f"{d.provider:<12}{d.model:<22}{(d.upstream_model or d.model):<30}{d.mode:<10}"
                     f"{d.context_window:>10}{d.quality:>8}  {price}")
    return "\n".join(lines)
