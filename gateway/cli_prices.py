"""`gateway prices list` and `gateway prices import FILE --format gateway|openrouter|litellm [--dry-run]`.

Argument parsing and printing only; the work is `gateway.prices` (formats, changes, store). An import prints
every entry's fate: changed (field by field), unchanged, deployments the file did not price, and entries that
price no deployment — nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from gateway.cli_common import ConfigOpt, load_config_or_exit
from gateway.config.schema import Config
from gateway.db import create_engine, upgrade
from gateway.errors import GatewayError
from gateway.prices.changes import Diff
from gateway.prices.formats import FORMATS, parse, price_fields
from gateway.prices.operations import import_file
from gateway.prices.store import PriceStore, Published, redis_from_config

prices_app = typer.Typer(help="The live price table: show it, import price files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(prices_app, name="prices")


async def _with_store(config: Config, seed: bool, work: Any) -> Any:
    engine = create_engine(config.gateway.ledger_url, pool_size=2)
    redis = redis_from_config(config)
    try:
        await upgrade(engine)
        store = PriceStore(engine, config, redis=redis)
        await store.start(seed=seed, follow=False)
        return await work(store)
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + "; ".join(", ".join(f"{k}={v}" for k, v in item.items() if v is not None)
                               for item in value) + "]"
    return str(value)


def print_diff(diff: Diff, *, max_unmatched: int | None = None) -> None:
    typer.echo(f"changed: {len(diff.changed_deployments)} deployment(s)")
    for c in diff.changed:
        typer.echo(f"  {c.provider}/{c.model}  {c.field}: {_fmt_value(c.old)} -> {_fmt_value(c.new)}")
    for code, old, new in diff.fx_changed:
        typer.echo(f"  fx_rates.{code}: {old or '-'} -> {new}")
    typer.echo(f"unchanged: {len(diff.unchanged)} deployment(s)")
    for p, m in diff.unchanged:
        typer.echo(f"  {p}/{m}")
    typer.echo(f"not in the file (keep their prices): {len(diff.not_named)} deployment(s)")
    for p, m in diff.not_named:
        typer.echo(f"  {p}/{m}")
    typer.echo(f"unmatched entries (price no configured deployment): {len(diff.unmatched)}")
    shown = diff.unmatched if max_unmatched is None else diff.unmatched[:max_unmatched]
    for name, reason in shown:
        typer.echo(f"  {name}: {reason}")
    if len(shown) < len(diff.unmatched):
        typer.echo(f"  ... and {len(diff.unmatched) - len(shown)} more (--all-unmatched lists them)")
    for note in diff.notes:
        typer.echo(f"note: {note}")


@prices_app.command("list")
def list_prices(config_file: Optional[str] = ConfigOpt) -> None:
    """Show the price table in force now, and any scheduled versions."""
    config = load_config_or_exit(config_file)

    async def work(store: PriceStore) -> None:
        now = datetime.now(timezone.utc)
        book = store.book
        v = book.current(now)
        typer.echo(f"price version {v.version}, in force from {v.effective_from.isoformat()}; "
                   f"fx_rates: {', '.join(f'{k}={r}' for k, r in sorted(v.fx_rates.items())) or '-'}")
        typer.echo(f"{'provider':<12} {'model':<24} {'cur':<4} {'per':<4} {'input':>12} {'output':>12} "
                   f"{'cached_input':>12} {'cache_write':>12}  tiers/off-peak")
        for d in config.deployments:
            price = v.prices.get((d.provider, d.model))
            if price is None:
                typer.echo(f"{d.provider:<12} {d.model:<24} (no price)")
                continue
            f = price_fields(price)
            extra = "; ".join(x for x in (
                f"tiers {_fmt_value(f['tiers'])}" if "tiers" in f else "",
                f"off_peak {_fmt_value(f['off_peak'])}" if "off_peak" in f else "") if x)
            cached, written = f["cached_input"] or "-", f.get("cache_write") or "-"
            typer.echo(f"{d.provider:<12} {d.model:<24} {f['currency']:<4} {f['per']:<4} {f['input']:>12} "
                       f"{f['output']:>12} {cached:>12} {written:>12}  {extra}")
        for s in book.versions():
            if s.effective_from > now:
                typer.echo(f"scheduled: version {s.version} from {s.effective_from.isoformat()}")

    asyncio.run(_with_store(config, False, work))


@prices_app.command("import")
def import_prices(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="price file"),
    fmt: str = typer.Option("gateway", "--format", help="gateway | openrouter | litellm"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the diff, store nothing"),
    all_unmatched: bool = typer.Option(False, "--all-unmatched", help="list every unmatched entry"),
    config_file: Optional[str] = ConfigOpt,
) -> None:
    """Load a price file into a new price version and print what changed."""
    if fmt not in FORMATS:
        typer.echo(f"--format must be one of {', '.join(FORMATS)}", err=True)
        raise typer.Exit(2)
    config = load_config_or_exit(config_file)
    try:
        parsed = parse(file.read_text(encoding="utf-8"), fmt)
    except GatewayError as e:
        typer.echo(f"{file}: {getattr(e, 'message', e)}", err=True)
        raise typer.Exit(1) from None

    async def work(store: PriceStore) -> Published:
        return await import_file(store, config, parsed, source=f"import:{fmt}:{file.name}", dry_run=dry_run)

    try:
        published: Published = asyncio.run(_with_store(config, not dry_run, work))
    except GatewayError as e:
        typer.echo(f"{file}: {getattr(e, 'message', e)}", err=True)
        raise typer.Exit(1) from None
    print_diff(published.change.diff, max_unmatched=None if all_unmatched else 50)
    if dry_run:
        typer.echo("dry run: nothing stored")
    elif published.version is None:
        typer.echo("no change: no new price version")
    else:
        for v in published.versions:
            typer.echo(f"stored price version {v.version}, in force from {v.effective_from.isoformat()}")
