"""Reading PromQL out of the deploy kit: the dashboard's queries and the alert rules' expressions.

`dashboard_queries()` gives every query of deploy/grafana/dashboards/gateway.json with Grafana's variables
replaced, ready to send to a real Prometheus (see prom.py). `selectors()` and `metric_names()` are a small,
regex-based reading of PromQL: enough to check which series and labels an expression uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# Words of PromQL that are not metric names when they stand alone.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "inf", "nan", "atan2",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"")
_IDENT = re.compile(r"(?<![a-zA-Z0-9_:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")


@dataclass(frozen=True)
class Query:
    where: str  # e.g. 'panel "Spend in range" A' or 'variable team'
    expr: str  # as written, with Grafana variables


def substitute(expr: str, rate_interval: str = "1m", range_: str = "1h", interval: str = "1m") -> str:
    """Replace Grafana's variables: the dashboard's own (all multi-value, `.*` when All) and the built-ins."""
    builtins = {"__rate_interval": rate_interval, "__range": range_, "__interval": interval}

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return builtins.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def _strip_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def selectors(expr: str) -> list[tuple[str | None, set[str]]]:
    """(metric name or None, label names matched) for every `name{...}` selector, and bare names with no braces."""
    found: list[tuple[str | None, set[str]]] = []
    for m in _SELECTOR.finditer(expr):
        found.append((m.group(1), {lm.group(1) for lm in _MATCHER.finditer(m.group(2))}))
    braced = {name for name, _ in found if name}
    for name in metric_names(expr):
        if name not in braced:
            found.append((name, set()))
    return found


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (functions, keywords, labels, durations left out)."""
    text = _strip_strings(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # label lists
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(1)
        following = text[m.end():].lstrip()
        if following.startswith("("):  # a function or an aggregation
            continue
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def grouping_labels(expr: str) -> set[str]:
    """Label names in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and `group_*(...)`."""
    labels: set[str] = set()
    for m in _GROUPING.finditer(_strip_strings(expr)):
        labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    return labels


def label_values_selector(query: str) -> str | None:
    """The series selector inside Grafana's `label_values(selector, label)`, if that is what `query` is."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
    return m.group(1) if m else None


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[Query]:
    """Every PromQL query of the dashboard's panels, plus the selectors of its `label_values` variables."""
    dashboard = load_dashboard() if dashboard is None else dashboard
    queries = []
    for p in _panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                queries.append(Query(f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            sel = label_values_selector(q)
            queries.append(Query(f"variable {v['name']}", sel if sel is not None else q))
    return queries


def panel_queries(dashboard: dict[str, Any] | None = None) -> list[Query]:
    """Only the panels' queries: what the lead runs against a scraped gateway."""
    return [q for q in dashboard_queries(dashboard) if q.where.startswith("panel ")]


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def recording_rules_file(queries: list[Query], **substitutions: str) -> str:
    """A rules file with each query as a recording rule, so `promtool check rules` parses them all."""
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(q.expr, **substitutions)}
             for i, q in enumerate(queries)]
    return yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False)
