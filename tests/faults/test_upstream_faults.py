"""Upstream faults acted out by a TCP proxy between the gateway and a vendor (contract 4 and 6), through a real
`gateway serve` with the OpenAI SDK as the client: each failure counted under its `kind`, fallen back before the
first byte, a clean SSE error event after it, and one ledger row per request either way."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import GatewayThread, ledger_rows
from tests.faults.conftest import MODEL
from tests.faults.proxy import FaultProxy
from tests.faults.vendor import COMPLETION_TOKENS, PROMPT_TOKENS, STREAM_PIECES, LoopbackVendor

MESSAGES = [{"role": "user", "content": "hello"}]

# fault, its options, the `kind` it must be counted under
BEFORE_FIRST_BYTE = [
    ("delay", {"delay_s": 1.6}, "timeout"),  # the flaky provider's timeout is 1 s
    ("cut", {}, "connect"),
    ("reset", {}, "connect"),
    ("garbage", {}, "bad_response"),
    ("not_json", {}, "bad_response"),
]


def scrape(gw: GatewayThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gw.url + "/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def upstream_errors(gw: GatewayThread) -> dict[tuple[str, str], float]:
    return {(dict(labels)["provider"], dict(labels)["kind"]): v for (name, labels), v in scrape(gw).items()
            if name == "gateway_upstream_errors_total" and v}


def fallbacks(gw: GatewayThread) -> dict[tuple[str, str], float]:
    return {(dict(labels)["from_provider"], dict(labels)["reason"]): v for (name, labels), v in scrape(gw).items()
            if name == "gateway_fallbacks_total" and v}


def sdk(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-app-key", max_retries=0)


def only_row(gw: GatewayThread) -> dict[str, Any]:
    rows = ledger_rows(gw, wait_for=1)
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize(("fault", "options", "kind"), BEFORE_FIRST_BYTE)
def test_a_fault_before_any_answer_falls_back_and_is_counted_under_its_kind(
        gateway: GatewayThread, proxy: FaultProxy, fault: str, options: dict[str, Any], kind: str) -> None:
    proxy.set(fault, count=1, **options)
    raw = sdk(gateway).chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == "".join(STREAM_PIECES)
    assert (raw.headers["x-gateway-provider"], raw.headers["x-gateway-attempts"]) == ("steady", "2")
    assert upstream_errors(gateway) == {("flaky", kind): 1}
    assert fallbacks(gateway) == {("flaky", kind): 1}
    row = only_row(gateway)
    assert (row["provider"], row["status"], row["attempts"]) == ("steady", "success", 2)
    assert (row["input_tokens"], row["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


@pytest.mark.parametrize(("fault", "options", "kind"),
                         BEFORE_FIRST_BYTE + [("truncate", {"events": 1}, "connect")])
def test_a_stream_that_fails_before_its_first_event_falls_back(
        gateway: GatewayThread, proxy: FaultProxy, fault: str, options: dict[str, Any], kind: str) -> None:
    proxy.set(fault, count=1, **options)
    with sdk(gateway).chat.completions.with_streaming_response.create(
            model=MODEL, messages=MESSAGES, stream=True) as response:
        assert response.headers["x-gateway-provider"] == "steady"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "".join(STREAM_PIECES)
    assert upstream_errors(gateway) == {("flaky", kind): 1}
    assert fallbacks(gateway) == {("flaky", kind): 1}
    row = only_row(gateway)
    assert (row["provider"], row["status"], row["attempts"]) == ("steady", "success", 2)
    assert (row["input_tokens"], row["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_a_stream_cut_after_its_first_events_ends_with_an_error_event_and_is_billed(
        gateway: GatewayThread, proxy: FaultProxy) -> None:
    proxy.set("truncate", events=3, count=1)  # two content events reach the client, then the connection is cut
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200 and r.headers["x-gateway-provider"] == "flaky"
        payloads = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert b"[DONE]" not in [p.encode() for p in payloads]
    *content, last = [orjson.loads(p) for p in payloads]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in content) == "".join(STREAM_PIECES[:2])
    assert set(last) == {"error"} and last["error"]["code"] == "upstream_stream_error"
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert upstream_errors(gateway) == {("flaky", "connect"): 1}
    assert fallbacks(gateway) == {}  # nothing is retried after the first byte
    row = only_row(gateway)
    assert (row["provider"], row["status"], row["error_kind"]) == ("flaky", "stream_error", "connect")
    assert row["output_tokens"] > 0  # what was generated before the cut is billed (estimated)
    assert row["usage_source"] == "estimated"


def test_the_sdk_sees_a_stream_cut_mid_way_as_an_api_error(gateway: GatewayThread, proxy: FaultProxy) -> None:
    proxy.set("truncate", events=3, count=1)
    stream = sdk(gateway).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for _ in stream:
            pass
    assert only_row(gateway)["status"] == "stream_error"


def test_a_dripping_vendor_is_slow_but_not_a_failure(gateway: GatewayThread, proxy: FaultProxy) -> None:
    proxy.set("drip", delay_s=0.0005, count=1)
    raw = sdk(gateway).chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "".join(STREAM_PIECES)
    assert raw.headers["x-gateway-provider"] == "flaky"
    assert upstream_errors(gateway) == {}
    assert only_row(gateway)["status"] == "success"


def test_every_provider_failing_is_a_502_naming_each_and_still_one_row(
        vendor: LoopbackVendor, proxy: FaultProxy) -> None:
    from tests.faults.conftest import faults_config

    with FaultProxy(vendor.port) as second:
        config = faults_config(f"http://127.0.0.1:{proxy.port}/v1", f"http://127.0.0.1:{second.port}/v1")
        with GatewayThread(config) as gw:
            proxy.set("garbage", count=1)
            second.set("reset", count=1)
            with pytest.raises(openai.APIStatusError) as caught:
                sdk(gw).chat.completions.create(model=MODEL, messages=MESSAGES)
            assert caught.value.status_code == 502
            error = caught.value.body
            assert isinstance(error, dict) and error["code"] == "upstream_unavailable"
            assert "flaky/loop-1: bad_response" in error["message"] and "steady/loop-1: connect" in error["message"]
            assert upstream_errors(gw) == {("flaky", "bad_response"): 1, ("steady", "connect"): 1}
            row = only_row(gw)
            assert (row["status"], row["error_kind"], row["attempts"]) == ("upstream_error", "connect", 2)
