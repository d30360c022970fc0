"""`gateway report`, `reprice`, `ledger recover` and `db upgrade` against a real ledger database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import timedelta
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.cli_ledger import register
from gateway.db import create_engine, upgrade
from tests.ledger.conftest import T0, insert_rows, row

CONFIG = """
gateway:
  reporting_currency: CNY
  ledger_url: "{url}"
fx_rates: {{USD: 7.10}}
providers:
  volcengine: {{api_base: "http://127.0.0.1:1/v1", timeout_s: 30}}
  openai: {{api_base: "http://127.0.0.1:1/v1"}}
deployments:
  - {{provider: volcengine, model: doubao-pro-32k, context_window: 32K, quality: 82,
     price: {{currency: CNY, per: 1K, input: 0.0008, output: 0.002}}}}
  - {{provider: openai, model: gpt-4o, context_window: 128K, quality: 95,
     price: {{currency: USD, per: 1M, input: 2.5, output: 10}}}}
savings_baseline: {{provider: openai, model: gpt-4o}}
"""


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def config_file(ledger_url: str, tmp_path: Path) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(url=ledger_url), encoding="utf-8")

    async def seed() -> None:
        engine = create_engine(ledger_url)
        try:
            await upgrade(engine)
            await insert_rows(engine, [
                row(f"r{i}", T0 + timedelta(hours=7 * i), team=f"team{i % 2}", tokens=(7, 0, 7),
                    costs=("0.0000056", "0", "0.000014"), baseline="0.0006745")
                for i in range(10)
            ] + [row("dead", T0, team="team1", status="in_flight", replica_id="gone", finished_at=None, tokens=(0, 0, 0),
                     prompt_tokens_estimate=500)])
        finally:
            await engine.dispose()

    asyncio.run(seed())
    return str(path)


def invoke(cli: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_report_formats_agree(cli: typer.Typer, config_file: str) -> None:
    base = ["report", "--from", "2026-11-01", "--to", "2026-12-01", "--group-by", "team", "--config", config_file]
    rows = list(csv.DictReader(io.StringIO(invoke(cli, *base, "--format", "csv"))))
    doc = json.loads(invoke(cli, *base, "--format", "json"))
    table = invoke(cli, *base, "--format", "table").splitlines()
    assert [r["team"] for r in rows] == ["team0", "team1"]
    assert rows[0]["total_cost"] == "0.000098" and rows[0]["requests"] == "5"  # team0 has 5 of the 10
    assert rows[0]["baseline_cost"] == "0.0033725" and rows[0]["savings"] == "0.0032745"
    assert [r["total_cost"] for r in rows] == [r["total_cost"] for r in doc["rows"]]
    assert doc["total"]["requests"] == 11 and doc["total"]["total_cost"] == "0.000196"
    assert table[-1].split()[:2] == ["TOTAL", "11"]


def test_report_in_another_currency_and_bad_arguments(cli: typer.Typer, config_file: str) -> None:
    out = invoke(cli, "report", "--from", "2026-11-01", "--to", "2026-12-01", "--currency", "USD",
                 "--format", "csv", "--config", config_file)
    (line,) = list(csv.DictReader(io.StringIO(out)))
    assert line["currency"] == "USD"
    # Each direction is divided (28 significant digits), then the directions add up exactly.
    assert abs(Decimal(line["total_cost"]) - Decimal("0.000196") / Decimal("7.10")) < Decimal("1e-30")
    with localcontext(prec=100):
        assert Decimal(line["total_cost"]) == Decimal(line["input_cost"]) + Decimal(line["output_cost"])
    bad = CliRunner().invoke(cli, ["report", "--from", "2026-11-01", "--to", "2026-12-01", "--group-by", "vendor",
                                   "--config", config_file])
    assert bad.exit_code == 2 and "unknown column 'vendor'" in bad.output


def test_reprice_recover_and_upgrade(cli: typer.Typer, config_file: str) -> None:
    out = invoke(cli, "reprice", "--from", "2026-11-01", "--to", "2026-12-01", "--version", "1",
                 "--group-by", "provider", "--config", config_file)
    assert out.splitlines()[0].split() == ["provider", "requests", "actual_cost", "repriced_cost", "difference",
                                          "unpriced", "currency"]
    assert out.splitlines()[2].split()[:5] == ["volcengine", "11", "0.000196", "0.000196", "0"]
    cut = Path(config_file).with_name("cut.yaml")
    cut.write_text("prices:\n  - {provider: volcengine, model: doubao-pro-32k, input: 0.0004}\n", encoding="utf-8")
    out = invoke(cli, "reprice", "--from", "2026-11-01", "--to", "2026-12-01", "--prices", str(cut),
                 "--config", config_file)
    assert out.splitlines()[2].split() == ["11", "0.000196", "0.000168", "-0.000028", "0", "CNY"]
    assert "closed 1 in-flight row(s)" in invoke(cli, "ledger", "recover", "--config", config_file)
    assert "closed 0 in-flight row(s)" in invoke(cli, "ledger", "recover", "--config", config_file)
    assert "up to date" in invoke(cli, "db", "upgrade", "--config", config_file)


def test_report_groups_by_api_with_the_contracts_csv_header(cli: typer.Typer, config_file: str) -> None:
    out = invoke(cli, "report", "--from", "2026-11-01", "--to", "2026-12-01", "--group-by", "api", "--format", "csv",
                 "--config", config_file)
    assert out.splitlines()[0] == (
        "api,requests,input_tokens,cached_input_tokens,cache_write_tokens,output_tokens,input_cost,"
        "cached_input_cost,cache_write_cost,output_cost,total_cost,baseline_cost,savings,currency")
    (line,) = list(csv.DictReader(io.StringIO(out)))  # rows written before any other API: all chat
    assert (line["api"], line["requests"], line["cache_write_tokens"], line["cache_write_cost"],
            line["total_cost"]) == ("chat", "11", "0", "0", "0.000196")
