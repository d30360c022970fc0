"""The dry run (`gateway route`, `POST /admin/route/explain`) gives every candidate's estimated cost, excluded
ones included (issue 15)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config.load import load_config
from gateway.decisions.routing import rank
from gateway.explain import decision_json, decision_table
from gateway.offline import dry_run_facts
from tests.e2e.conftest import GatewayThread
from tests.faults.conftest import MODEL, faults_config
from tests.faults.vendor import LoopbackVendor

DEMO = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"


def test_excluded_deployments_carry_their_expected_cost_exactly() -> None:
    cfg = load_config(DEMO, env={})
    facts, pool, prices, now = dry_run_facts(cfg, "premium", 1000, 200, None)
    doc = decision_json(facts, rank(facts, pool, prices, now), prices, now)
    excluded = {(e["provider"], e["model"]): e for e in doc["excluded"]}
    hunyuan = excluded[("hunyuan", "hunyuan-standard")]  # quality 78 < 85; 0.0045 / 0.005 CNY per 1K
    assert hunyuan["reason"] == "quality"
    assert Decimal(hunyuan["expected_cost"]) == (1000 * Decimal("0.0045") + 200 * Decimal("0.005")) / 1000
    assert excluded[("qianfan", "ernie-lite-8k")]["expected_cost"] == "0"  # free models cost 0, not "unknown"
    assert all(e["expected_cost"] is not None for e in doc["excluded"])
    table = decision_table(facts, rank(facts, pool, prices, now), prices, now)
    assert "hunyuan/hunyuan-standard: quality: quality 78 < min_quality 85 (expected cost 0.0055 CNY)" in table


def test_gateway_route_prints_the_cost_of_excluded_candidates() -> None:
    result = CliRunner().invoke(app, ["route", "--model", "premium", "--prompt-tokens", "1000", "--max-tokens",
                                      "200", "--config", str(DEMO)])
    assert result.exit_code == 0, result.output
    assert "hunyuan/hunyuan-standard: quality: quality 78 < min_quality 85 (expected cost 0.0055 CNY)" in result.output


def test_route_explain_gives_excluded_candidates_a_cost() -> None:
    with LoopbackVendor() as vendor, GatewayThread(faults_config(vendor.url, vendor.url)) as gw:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
                "gateway": {"providers": ["steady"]}}
        r = httpx.post(gw.url + "/admin/route/explain", json=body, headers={"authorization": "Bearer admin-secret"})
        assert r.status_code == 200, r.text
        doc = r.json()
        [flaky] = doc["excluded"]
        assert flaky["reason"] == "provider_not_allowed"
        prompt = doc["prompt_tokens_estimate"]
        assert Decimal(flaky["expected_cost"]) == (prompt * Decimal("0.001") + 100 * Decimal("0.002")) / 1000
