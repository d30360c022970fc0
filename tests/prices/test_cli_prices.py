"""`gateway prices list` and `gateway prices import`: the diff is printed whole, --dry-run stores nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.cli_prices import register
from tests.prices.conftest import CONFIG_YAML

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """gateway"""

    register(app)
    return app


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    text = CONFIG_YAML.replace("reporting_currency: CNY",
                               f"reporting_currency: CNY\n  ledger_url: sqlite:///{tmp_path / 'ledger.db'}")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_import_prints_changed_unchanged_not_named_and_unmatched(app: typer.Typer, config_file: Path,
                                                                 tmp_path: Path) -> None:
    runner = CliRunner()
    seed = ROOT / "config/prices/cn-2024-05.yaml"
    dry = runner.invoke(app, ["prices", "import", str(seed), "--format", "gateway", "--dry-run",
                              "--config", str(config_file)])
    assert dry.exit_code == 0, dry.output
    out = dry.output
    assert "dashscope/qwen-long  input: 0.02 -> 0.0005" in out
    assert "unchanged: 2 deployment(s)" in out  # deepseek-v2 and doubao-pro-32k are already at these prices
    assert "volcengine/doubao-pro-128k: names no configured deployment" in out
    assert "openai/gpt-4o" in out  # not in the file: listed as keeping its price
    assert "dry run: nothing stored" in out

    listed = runner.invoke(app, ["prices", "list", "--config", str(config_file)])
    assert listed.exit_code == 0 and "price version 1" in listed.output and "0.02" in listed.output

    real = runner.invoke(app, ["prices", "import", str(seed), "--config", str(config_file)])
    assert real.exit_code == 0, real.output
    assert "stored price version 2" in real.output
    listed = runner.invoke(app, ["prices", "list", "--config", str(config_file)])
    assert "price version 2" in listed.output
    again = runner.invoke(app, ["prices", "import", str(seed), "--config", str(config_file)])
    assert "no change: no new price version" in again.output


def test_litellm_import_lists_unmatched_entries_without_dropping_them(app: typer.Typer, config_file: Path,
                                                                     tmp_path: Path) -> None:
    f = tmp_path / "litellm.json"
    f.write_text('{"deepseek/deepseek-chat": {"input_cost_per_token": 2.7e-07, "output_cost_per_token": 1.1e-06},'
                 ' "mystery/model": {"input_cost_per_token": 1e-06}, "dall-e-3": {"output_cost_per_image": 0.04}}')
    r = CliRunner().invoke(app, ["prices", "import", str(f), "--format", "litellm", "--dry-run",
                                 "--config", str(config_file)])
    assert r.exit_code == 0, r.output
    assert "deepseek/deepseek-v2  input: 0.001 -> 0.27" in r.output
    assert "mystery/model: names no configured deployment" in r.output
    assert "dall-e-3: no input_cost_per_token" in r.output


def test_a_bad_file_exits_1_with_the_reason(app: typer.Typer, config_file: Path, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("prices:\n  - {provider: deepseek, model: deepseek-v2, input: -1}\n")
    r = CliRunner().invoke(app, ["prices", "import", str(f), "--config", str(config_file)])
    assert r.exit_code == 1
    assert "prices[0].input" in r.output
