"""`gateway demo --once` end to end: the real command, its sample traffic, and what it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.demo.run import parse_row

BIN = Path(sys.executable).parent / "gateway"


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> str:
    cwd = tmp_path_factory.mktemp("demo-once")  # the SQLite ledger lands here
    done = subprocess.run([str(BIN), "demo", "--once"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def row(output: str, title: str) -> dict[str, str]:
    return parse_row(next(line for line in output.splitlines() if line.startswith(title)))


def test_a_conversation_stays_warm_turn_two_reports_cached_tokens(output):
    cold = row(output, "conversation turn 1 (cold cache)")
    warm = row(output, "conversation turn 2 (prefix cached: warm)")
    assert cold["status"] == warm["status"] == "200"
    assert cold["deployment"].startswith("deepseek/") and warm["deployment"].startswith("deepseek/")
    cold_cached, warm_cached = int(cold["cached"]), int(warm["cached"])
    assert cold_cached == 0 and warm_cached >= 256 and warm_cached % 64 == 0
    assert int(warm["input"]) < int(cold["input"])  # the gateway bills the cached part as cached_input


def test_a_tool_round_trip_calls_the_tool_then_answers_with_its_result(output):
    call = row(output, "tool call: auto, tools offered")
    answer = row(output, "tool result back: the answer uses it")
    assert call["status"] == answer["status"] == "200"
    assert "tool_calls: get_weather(" in call["answer"] and "Hangzhou" in call["answer"]
    assert answer["answer"].startswith("stop:") and "Based on the tool re" in answer["answer"]


def test_json_schema_sample_answers_json(output):
    assert row(output, "JSON schema output")["answer"].startswith('stop: {"vendor":')


def test_messages_requests_go_natively_to_deepseeks_anthropic_endpoint_and_hit_its_cache(output):
    first = row(output, "Messages API, cache_control (writes cache)")
    second = row(output, "Messages API again (reads cache)")
    assert first["status"] == second["status"] == "200"
    assert first["deployment"] == second["deployment"] == "deepseek-anthropic/deepseek-chat"
    written = re.fullmatch(r"0 \+(\d+)w", first["cached"])
    assert written is not None and int(written.group(1)) >= 1024
    assert second["cached"] == written.group(1)
    assert second["answer"] == "end_turn: text"


def test_each_api_gets_one_request_chat_embeddings_responses_messages(output):
    assert row(output, "embedding")["status"] == "200"
    assert row(output, "short prompt, route auto (quality >= 70)")["status"] == "200"
    responses = row(output, "Responses API (/v1/responses)")
    assert responses["status"] == "200" and responses["answer"].startswith("completed: [")
    assert responses["deployment"] != "-/-"


def test_it_prints_the_cost_report_from_the_ledger(output):
    report = output.split("Cost report from the ledger", 1)[1]
    assert "deepseek-anthropic" in report and "TOTAL" in report
