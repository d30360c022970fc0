"""`gateway report`, `gateway reprice`, `gateway ledger recover` and `gateway db upgrade` (contract section 2).

Argument parsing and printing only; the work is `gateway.ledger` (queries, reports, reprice, recovery).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli_common import ConfigOpt, load_config_or_exit
from gateway.config.schema import Config
from gateway.db import create_engine, upgrade
from gateway.errors import GatewayError
from gateway.ledger import reports
from gateway.ledger.queries import fetch_partials, stream_usage
from gateway.ledger.recovery import recover, stale_after_for
from gateway.ledger.reprice import Repricing, render_reprice
from gateway.prices.book import PriceBook

ledger_app = typer.Typer(help="The request ledger.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)

FromOpt = typer.Option(..., "--from", help="inclusive: a date (UTC midnight) or ISO time, UTC unless an offset")
ToOpt = typer.Option(..., "--to", help="exclusive: a date or ISO time")
GroupOpt = typer.Option("", "--group-by", help="comma-separated: day,month,team,key,route,provider,model,api")


async def _load_book(engine: AsyncEngine, config: Config) -> PriceBook:
    """Every stored price version (for FX by version and `--version N`); the config's table on a new ledger."""
    from gateway.prices.store import PriceStore

    store = PriceStore(engine, config)
    await store.start(seed=False, follow=False)
    return store.book


def _run(config: Config, work: Callable[[AsyncEngine], Awaitable[Any]], *, migrate: bool = True) -> Any:
    """Run `work` on a migrated ledger database; a report or price error is printed, exit status 1."""
    async def main() -> Any:
        engine = create_engine(config.gateway.ledger_url, pool_size=2)
        try:
            if migrate:
                await upgrade(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (GatewayError, reports.ReportError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def report_command(
    from_: str = FromOpt, to: str = ToOpt, group_by: str = GroupOpt,
    currency: Optional[str] = typer.Option(None, "--currency", help="convert at each row's price version FX"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    config: Optional[str] = ConfigOpt,
) -> None:
    """Finance report from the ledger: exact sums per group, baseline cost and savings."""
    cfg = load_config_or_exit(config)
    try:
        window = reports.make_window(from_, to)
        groups = reports.parse_group_by(group_by)
        if fmt not in reports.FORMATS:
            raise reports.ReportError(f"--format: choose one of {', '.join(reports.FORMATS)}")
    except reports.ReportError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    target = (currency or cfg.gateway.reporting_currency).upper()

    async def work(engine: AsyncEngine) -> str:
        partials = await fetch_partials(engine, window, groups)
        fx = reports.fx_from_book(await _load_book(engine, cfg)) if target != cfg.gateway.reporting_currency or any(
            p.reporting_currency not in (None, target) for p in partials) else None
        return reports.render(reports.build_report(partials, window, groups, target, fx), fmt)

    typer.echo(_run(cfg, work), nl=False)


def reprice_command(
    from_: str = FromOpt, to: str = ToOpt, group_by: str = GroupOpt,
    prices: Optional[Path] = typer.Option(None, "--prices", help="a price file (gateway format)"),
    version: Optional[int] = typer.Option(None, "--version", help="a stored price version"),
    prices_format: str = typer.Option("gateway", "--prices-format", help="gateway | litellm | openrouter"),
    config: Optional[str] = ConfigOpt,
) -> None:
    """What-if: the window's recorded tokens re-priced under another table, actual vs re-priced per group."""
    if (prices is None) == (version is None):
        typer.echo("error: give exactly one of --prices FILE or --version N", err=True)
        raise typer.Exit(2)
    cfg = load_config_or_exit(config)
    try:
        window = reports.make_window(from_, to)
        groups = reports.parse_group_by(group_by)
    except reports.ReportError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None

    async def work(engine: AsyncEngine) -> str:
        book = await _load_book(engine, cfg)
        if prices is not None:
            from gateway.prices.changes import apply_import
            from gateway.prices.formats import parse

            now = datetime.now(timezone.utc)
            table = apply_import(book.current(now), parse(prices.read_text(encoding="utf-8"), prices_format),
                                 cfg, now).version
        else:
            found = book.get(version) if version is not None else None
            if found is None:
                raise reports.ReportError(f"--version {version}: no such price version "
                                          f"(latest is {book.latest_number()})")
            table = found
        acc = Repricing(table, groups, window.offset)
        async for row in stream_usage(engine, window):
            acc.add(row)
        return render_reprice(groups, acc.lines(), table.reporting_currency)

    typer.echo(_run(cfg, work), nl=False)


@ledger_app.command("recover")
def recover_command(
    config: Optional[str] = ConfigOpt,
    stale_after: Optional[float] = typer.Option(None, "--stale-after",
                                                help="seconds without heartbeat before a replica counts as gone "
                                                     "(default: longest provider timeout + 30)"),
) -> None:
    """Close rows left in_flight by dead replicas as interrupted, with estimated usage."""
    cfg = load_config_or_exit(config)
    stale = stale_after if stale_after is not None else stale_after_for(cfg)
    base = cfg.savings_baseline

    async def work(engine: AsyncEngine) -> list[str]:
        book = await _load_book(engine, cfg)
        return await recover(engine, datetime.now(timezone.utc), stale, price_lookup=book.get,
                             baseline=(base.provider, base.model) if base else None)

    closed = _run(cfg, work)
    typer.echo(f"closed {len(closed)} in-flight row(s) of dead replicas as interrupted")


@db_app.command("upgrade")
def upgrade_command(config: Optional[str] = ConfigOpt) -> None:
    """Apply pending schema migrations to the ledger database."""
    cfg = load_config_or_exit(config)

    applied = _run(cfg, upgrade, migrate=False)
    where = cfg.gateway.ledger_url.split("@")[-1]  # never print credentials
    typer.echo(f"applied migrations {', '.join(map(str, applied))} to {where}" if applied
               else f"{where} is up to date")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
    app.command("reprice")(reprice_command)
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(db_app, name="db")
