"""`gateway keys ...` and `gateway teams ...`: the key printed once, never listed."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from gateway.cli_keys import register

CONFIG = """
gateway:
  ledger_url: sqlite:///{db}
  admin_key: cli-admin
providers:
  p: {{api_base: "http://127.0.0.1:1/v1"}}
deployments:
  - {{provider: p, model: m, context_window: 1000, quality: 50, price: {{input: 0.001, output: 0.002}}}}
"""


def test_keys_and_teams_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(CONFIG.format(db=tmp_path / "ledger.db"))
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # a group, as in the real `gateway` command
        pass

    run = CliRunner()
    out = run.invoke(app, ["keys", "create", "--team", "search", "--budget", "100", "--budget-period", "month",
                           "--rpm", "60", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    key = re.search(r"key:\s+(gw-\S+)", out.output).group(1)  # type: ignore[union-attr]
    key_id = re.search(r"id:\s+(\S+)", out.output).group(1)  # type: ignore[union-attr]

    listing = run.invoke(app, ["keys", "list", "--config", str(cfg)])
    assert listing.exit_code == 0, listing.output
    assert key_id in listing.output and "search" in listing.output and "100" in listing.output
    assert key not in listing.output

    assert run.invoke(app, ["teams", "set", "search", "--budget", "500", "--budget-period", "day",
                            "--config", str(cfg)]).exit_code == 0
    teams = run.invoke(app, ["teams", "list", "--config", str(cfg)])
    assert "search" in teams.output and "500" in teams.output and "day" in teams.output

    revoked = run.invoke(app, ["keys", "revoke", key_id, "--config", str(cfg)])
    assert revoked.exit_code == 0 and key not in revoked.output
    assert run.invoke(app, ["keys", "revoke", "000000000000", "--config", str(cfg)]).exit_code == 1
    bad = run.invoke(app, ["keys", "create", "--team", "t", "--budget", "5", "--config", str(cfg)])
    assert bad.exit_code != 0
