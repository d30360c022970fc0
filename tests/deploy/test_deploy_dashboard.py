"""deploy/grafana/dashboards/gateway.json: valid, importable, and querying only contract metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.contract import CONTRACT_METRICS, queryable_series
from tests.deploy.prom import MISSING_REASON, find_binary
from tests.deploy.promql import (
    DEPLOY,
    Query,
    dashboard_queries,
    grouping_labels,
    load_dashboard,
    metric_names,
    recording_rules_file,
    selectors,
    substitute,
)


def _problems(query: Query) -> list[str]:
    """Why a query is not built on contract metrics and their labels (empty when it is)."""
    series = queryable_series()
    expr = substitute(query.expr)
    names = metric_names(expr)
    problems = []
    if not names:
        problems.append("selects no metric")
    if names - set(series):
        problems.append(f"not in contract section 6: {sorted(names - set(series))}")
    for name, labels in selectors(expr):
        if name not in series:
            problems.append(f"selector {{...}} without a contract metric name ({name})")
        elif labels - set(series[name]):
            problems.append(f"{name} has no label(s) {sorted(labels - set(series[name]))}")
    allowed = set().union(*(series.get(n, ()) for n in names)) if names else set()
    if grouping_labels(expr) - allowed:
        problems.append(f"groups by label(s) no selected metric has: {sorted(grouping_labels(expr) - allowed)}")
    return problems


def test_dashboard_is_json_with_a_uid_and_unique_panel_ids() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p.get("gridPos", {}).get("w", 0) > 0 for p in dashboard["panels"])


def test_every_dashboard_query_uses_only_contract_metrics_and_their_labels() -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    bad = {q.where: _problems(q) for q in queries if _problems(q)}
    assert not bad, bad


def test_contract_metric_checker_rejects_foreign_metrics_and_labels() -> None:
    # The check above is only as good as this reading of PromQL: it must see what is wrong.
    assert _problems(Query("x", 'sum(rate(up{job="gateway"}[5m]))'))
    assert _problems(Query("x", 'sum by (team) (rate(gateway_requests_total[5m]))'))
    assert _problems(Query("x", 'gateway_budget_spent{provider="deepseek"}'))
    assert _problems(Query("x", 'sum(rate(gateway_requests_created[5m]))'))
    assert _problems(Query("x", 'histogram_quantile(0.9, sum by (le) (rate(gateway_tokens_total_bucket[5m])))'))
    assert not _problems(Query("x", 'histogram_quantile(0.9, sum by (le, provider) '
                                    '(rate(gateway_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval])))'))


def test_dashboard_shows_every_contract_metric() -> None:
    used: set[str] = set()
    for q in dashboard_queries():
        used |= metric_names(substitute(q.expr))
    missing = []
    for name, (kind, _labels) in CONTRACT_METRICS.items():
        names = {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
        if not names & used:
            missing.append(name)
    assert not missing


def test_every_dashboard_query_parses_with_promtool(tmp_path: Path) -> None:
    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip(MISSING_REASON.format(name="promtool"))
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text(recording_rules_file(dashboard_queries()))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_panels_query_the_selectable_prometheus_data_source() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_grafana_provisioning_loads_the_dashboard_and_a_prometheus_data_source() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/gateway.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == dashboards_path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
