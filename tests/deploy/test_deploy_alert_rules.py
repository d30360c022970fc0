"""deploy/prometheus/alerts.yml: valid for promtool, unit-tested, and built only on contract metrics."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.contract import queryable_series
from tests.deploy.prom import MISSING_REASON, find_binary
from tests.deploy.promql import ALERTS, alert_rules, grouping_labels, metric_names, selectors

ALERTS_TEST = ALERTS.parent / "alerts_test.yml"
SEVERITIES = {"info", "warning", "critical"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = find_binary("promtool")
    if path is None:
        pytest.skip(MISSING_REASON.format(name="promtool"))
    return path


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = _run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    result = _run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fails_when_the_alert_cannot_fire(promtool: str, tmp_path: Path) -> None:
    # Mutation check: for each alert in turn, replace its expression by one that never fires; the unit tests
    # must then fail, which proves some test expects that alert to fire.
    source = yaml.safe_load(ALERTS.read_text())
    names = [r["alert"] for g in source["groups"] for r in g["rules"] if "alert" in r]
    runs = {}
    for name in names:
        work = tmp_path / name
        work.mkdir()
        mutated = yaml.safe_load(ALERTS.read_text())
        for group in mutated["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    rule["expr"] = "vector(1) > 2"
        (work / "alerts.yml").write_text(yaml.safe_dump(mutated, sort_keys=False))
        shutil.copyfile(ALERTS_TEST, work / "alerts_test.yml")
        runs[name] = subprocess.Popen([promtool, "test", "rules", "alerts_test.yml"], cwd=work,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    untested = []
    for name, proc in runs.items():
        out, _ = proc.communicate(timeout=60)
        if proc.returncode == 0:
            untested.append(name)
    assert not untested, f"no unit test expects these alerts to fire: {untested}"


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    alerts = [r for r in alert_rules() if "alert" in r]
    assert alerts
    for rule in alerts:
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), rule["alert"]
        assert annotations.get("description", "").strip(), rule["alert"]


def test_alert_expressions_use_only_contract_metrics_and_their_labels() -> None:
    series = queryable_series()
    for rule in alert_rules():
        expr = rule["expr"]
        names = metric_names(expr)
        assert names, f"{rule.get('alert')}: selects no metric"
        assert names <= set(series), f"{rule.get('alert')}: not in contract section 6: {names - set(series)}"
        allowed = set().union(*(series[n] for n in names))
        for name, labels in selectors(expr):
            assert name in series, f"{rule.get('alert')}: selector without a contract metric name"
            assert labels <= set(series[name]), f"{rule.get('alert')}: {name} has no labels {labels - set(series[name])}"
        assert grouping_labels(expr) <= allowed, f"{rule.get('alert')}: groups by unknown labels"


def test_alerts_cover_each_condition_of_contract_section_8() -> None:
    by_metric: dict[str, list[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            by_metric.setdefault(name, []).append(rule["expr"])
    exprs = [r["expr"] for r in alert_rules()]
    assert any('outcome="upstream_error"' in e for e in by_metric["gateway_requests_total"]), "error rate"
    assert "gateway_fallbacks_total" in by_metric, "fallback rate"
    assert "gateway_provider_healthy" in by_metric, "provider unhealthy"
    assert any("gateway_budget_spent" in e and "gateway_budget_limit" in e and "0.9" in e for e in exprs), "budget"
    assert any("offset 1d" in e or "[1d]" in e for e in by_metric["gateway_cost_total"]), "spend rate anomaly"
    assert any("time()" in e for e in by_metric["gateway_price_feed_last_success_timestamp_seconds"]), "stale feed"
    assert "gateway_ledger_pending_rows" in by_metric, "ledger backlog"
