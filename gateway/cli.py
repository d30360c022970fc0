"""The `gateway` command: parses arguments and calls into the package. No logic lives here."""

from __future__ import annotations

import asyncio
import sys
from typing import Optional

import typer

from gateway.config.load import resolve_config_path
from gateway import cli_keys, cli_ledger, cli_prices
from gateway.cli_common import ConfigOpt, load_config_or_exit
from gateway.errors import GatewayError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="OpenAI-compatible LLM cost-routing gateway")


@app.command()
def serve(config: Optional[str] = ConfigOpt, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    """Run the proxy."""
    import os

    from gateway.server import serve as run_server

    path = resolve_config_path(config)
    cfg = load_config_or_exit(path)
    os.environ["GATEWAY_CONFIG"] = path  # workers load the same file
    run_server(cfg, host=host, port=port, workers=workers)


@app.command("check-config")
def check_config(file: str) -> None:
    """Validate a config file and print its deployments."""
    from gateway.config.describe import deployments_table

    cfg = load_config_or_exit(file)
    typer.echo(deployments_table(cfg))
    typer.echo(f"ok: {len(cfg.deployments)} deployments, {len(cfg.providers)} providers, "
               f"{len(cfg.routes)} routes")


@app.command()
def route(
    model: str = typer.Option(..., "--model"),
    prompt_tokens: int = typer.Option(100, "--prompt-tokens"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    min_quality: Optional[int] = typer.Option(None, "--min-quality"),
    config: Optional[str] = ConfigOpt,
) -> None:
    """Dry run: every candidate with its estimated cost, and why each excluded one was excluded."""
    from gateway.decisions.routing import rank
    from gateway.explain import decision_table
    from gateway.offline import dry_run_facts

    cfg = load_config_or_exit(config)
    try:
        facts, pool, prices, now = dry_run_facts(cfg, model, prompt_tokens, max_tokens, min_quality)
    except GatewayError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(decision_table(facts, rank(facts, pool, prices, now), prices, now))


@app.command()
def demo(port: int = 8080, once: bool = typer.Option(False, "--once", help="send sample traffic, report, exit")) -> None:
    """Simulated vendors on loopback and the gateway in front of them, on the embedded defaults."""
    from gateway.demo.run import run_demo

    sys.exit(asyncio.run(run_demo(port=port, once=once)))


@app.command()
def simulate(turns: int = typer.Option(8, "--turns", min=2, help="turns per conversation / steps per agent loop")
             ) -> None:
    """Replay conversations and agent loops through the demo vendors under list-price, cache-aware and
    fixed-deployment routing, in three price scenarios; print each total cost (from the ledger) and cache share."""
    from gateway.simulate import main as run_simulation

    sys.exit(run_simulation(turns))


for _module in (cli_ledger, cli_prices, cli_keys):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
