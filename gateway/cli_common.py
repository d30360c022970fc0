"""What every `gateway` subcommand shares: the `--config` option and loading the config or exiting 1."""

from __future__ import annotations

from typing import Optional

import typer

from gateway.config.load import load_config, resolve_config_path
from gateway.config.schema import Config
from gateway.errors import GatewayError

ConfigOpt = typer.Option(None, "--config", help="config file (default: $GATEWAY_CONFIG, else config/gateway.yaml)")


def load_config_or_exit(path: Optional[str]) -> Config:
    """`--config FILE`, else `$GATEWAY_CONFIG`, else `config/gateway.yaml`; a bad file prints why and exits 1."""
    try:
        return load_config(resolve_config_path(path))
    except GatewayError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
