"""The price-change preview re-ranks recent requests with the router itself, under the old and the new table."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from gateway.config.load import load_config
from gateway.console.preview import Sample, reroute
from gateway.decisions.routing import rank
from gateway.offline import dry_run_facts
from gateway.prices.book import version_from_config
from gateway.prices.changes import apply_update

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)


def test_a_cheaper_deployment_takes_the_requests_it_now_wins() -> None:
    config = load_config(str(DEMO))
    old = version_from_config(config)
    new = apply_update(old, {"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": "0.0001",
                                          "output": "0.0002"}]}, config, NOW).version
    samples = [Sample("auto", 20, 50)] * 3 + [Sample("premium", 500, 100), Sample("cheap", 10, 10)]
    preview = reroute(config, samples, old, new, NOW)
    assert preview.sampled == 5
    moves = {(m.route, m.before, m.after): m.requests for m in preview.moves}
    assert moves[("auto", ("zhipu", "glm-3-turbo"), ("deepseek", "deepseek-v2"))] == 3
    assert ("cheap", ("qianfan", "ernie-speed-128k"), ("deepseek", "deepseek-v2")) not in moves  # free stays first
    # The costs are the router's own expected costs at each first choice.
    facts, pool, _, _ = dry_run_facts(config, "auto", 20, 50, None, new)
    assert next(m for m in preview.moves if m.route == "auto").cost_after == 3 * rank(
        facts, pool, new, NOW).candidates[0].expected_cost
    assert preview.cost_after < preview.cost_before


def test_no_change_moves_nothing_and_unknown_routes_are_skipped() -> None:
    config = load_config(str(DEMO))
    old = version_from_config(config)
    preview = reroute(config, [Sample("auto", 20, 50), Sample("gone-route", 5, 5)], old, old, NOW)
    assert preview.moves == () and preview.moved == 0
    assert preview.cost_before == preview.cost_after > Decimal(0)
