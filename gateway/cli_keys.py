"""`gateway keys ...` and `gateway teams ...` (contract section 2): argument parsing and printing only.

The key is printed once, by `keys create`; listings never show a key or its hash. With Redis configured, a
revocation or a budget change is published so running replicas apply it at once.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional, TypeVar

import typer

from gateway.cli_common import ConfigOpt, load_config_or_exit
from gateway.decisions.limits import Budget, parse_budget, period_start
from gateway.errors import GatewayError

T = TypeVar("T")


def _run(config_path: Optional[str], body: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Load the config, open the ledger database (migrated) and the key store, run `body(config, store)`."""
    from gateway import db
    from gateway.keys.secrets import derive_secret
    from gateway.keys.store import KeyStore
    from gateway.keys.sync import publish_event

    config = load_config_or_exit(config_path)

    async def main() -> T:
        engine = db.create_engine(config.gateway.ledger_url, pool_size=2)
        redis = None
        try:
            await db.upgrade(engine)
            store = KeyStore(engine, derive_secret(config.gateway))
            if config.gateway.redis_url:
                from redis.asyncio import Redis

                redis = Redis.from_url(config.gateway.redis_url)
                prefix = config.gateway.redis_prefix
                client = redis

                async def publish(event: str, subject: str) -> None:
                    await publish_event(client, prefix, event, subject)

                store.set_publisher(publish)
            return await body(config, store)
        finally:
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    try:
        return asyncio.run(main())
    except GatewayError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None


def _budget(amount: Optional[str], period: Optional[str]) -> Budget | None:
    try:
        return parse_budget(amount, period)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


async def _spent(store: Any, config: Any, budget: Budget | None, **who: str) -> str:
    """Spend in the current period, from the ledger (the CLI may run where no replica's counters are)."""
    if budget is None:
        return "-"
    from gateway.limits.spend import spend_since

    since = period_start(datetime.now(timezone.utc), budget.period, config.gateway.reporting_timezone)
    try:
        return str(await spend_since(store.engine, since=since, **who))
    except Exception:  # no ledger table yet (fresh database): nothing billed
        return "0"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(help="Client API keys: create, list, revoke.", no_args_is_help=True)
    teams_app = typer.Typer(help="Team budgets, across all of a team's keys.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")
    app.add_typer(teams_app, name="teams")

    @keys_app.command("create")
    def keys_create(team: str = typer.Option(..., "--team"),
                    budget: Optional[str] = typer.Option(None, "--budget", help="reporting currency per period"),
                    budget_period: Optional[str] = typer.Option(None, "--budget-period", help="day or month"),
                    rpm: Optional[int] = typer.Option(None, "--rpm", min=1),
                    tpm: Optional[int] = typer.Option(None, "--tpm", min=1),
                    config: Optional[str] = ConfigOpt) -> None:
        """Issue a key. It is printed once and stored only as a hash."""
        parsed = _budget(budget, budget_period)

        async def body(cfg: Any, store: Any) -> None:
            record, token = await store.create_key(team, budget=parsed, rpm=rpm, tpm=tpm)
            typer.echo(f"id:    {record.id}\nteam:  {record.team}\nkey:   {token}\n"
                       "The key is shown only this once; store it now.")

        _run(config, body)

    @keys_app.command("list")
    def keys_list(config: Optional[str] = ConfigOpt) -> None:
        """Every key: id, team, budget, spent this period, limits. Never the key."""

        async def body(cfg: Any, store: Any) -> None:
            rows = []
            for r in await store.list_keys():
                rows.append([r.id, r.team, str(r.budget.amount) if r.budget else "-",
                             r.budget.period if r.budget else "-", await _spent(store, cfg, r.budget, key_id=r.id),
                             str(r.rpm or "-"), str(r.tpm or "-"), r.created_at.strftime("%Y-%m-%d %H:%M"),
                             r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else "-"])
            _table(["id", "team", "budget", "period", "spent", "rpm", "tpm", "created", "revoked"], rows)

        _run(config, body)

    @keys_app.command("revoke")
    def keys_revoke(key_id: str = typer.Argument(...), config: Optional[str] = ConfigOpt) -> None:
        """Revoke a key; running replicas refuse it at once (through Redis, or within a second without)."""

        async def body(cfg: Any, store: Any) -> None:
            record = await store.revoke_key(key_id)
            typer.echo(f"revoked {record.id} (team {record.team})")

        _run(config, body)

    @teams_app.command("set")
    def teams_set(team: str = typer.Argument(...),
                  budget: str = typer.Option(..., "--budget", help="reporting currency per period"),
                  budget_period: str = typer.Option(..., "--budget-period", help="day or month"),
                  config: Optional[str] = ConfigOpt) -> None:
        """Set a team's budget across all its keys."""
        parsed = _budget(budget, budget_period)

        async def body(cfg: Any, store: Any) -> None:
            record = await store.set_team(team, parsed)
            typer.echo(f"team {record.name}: budget {budget} {cfg.gateway.reporting_currency} per {budget_period}")

        _run(config, body)

    @teams_app.command("list")
    def teams_list(config: Optional[str] = ConfigOpt) -> None:
        """Teams with their budget and spend this period."""

        async def body(cfg: Any, store: Any) -> None:
            rows = []
            for t in await store.list_teams():
                rows.append([t.name, str(t.budget.amount) if t.budget else "-",
                             t.budget.period if t.budget else "-", await _spent(store, cfg, t.budget, team=t.name)])
            _table(["team", "budget", "period", "spent"], rows)

        _run(config, body)
