"""POST /v1/responses end to end: the real OpenAI SDK, the OpenAI Agents SDK and LangChain as clients of a real
gateway on loopback in front of the simulated vendors (which answer tool calls and JSON modes). Each request is
billed exactly: the ledger row's costs are the row's tokens at the deployment's prices, to the digit."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from gateway.config.load import parse_yaml_text
from tests.e2e.conftest import DEMO, GatewayThread, demo_config, ledger_rows


def _demo_prices() -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """config/demo.yaml's prices (CNY per 1K tokens) by model: input, cached input (default: input), output."""
    prices = {}
    for d in parse_yaml_text(DEMO.read_text())["deployments"]:
        p = d["price"]
        assert p["per"] == "1K" and p["currency"] == "CNY"
        prices[d["model"]] = (Decimal(p["input"]), Decimal(p.get("cached_input", p["input"])), Decimal(p["output"]))
    return prices


PRICES = _demo_prices()
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"], "additionalProperties": False}, "strict": True}


def assert_billed_exactly(row: dict[str, Any], usage: Any | None = None) -> None:
    """The row's costs are its tokens at its deployment's prices; its tokens are the ones the client saw."""
    input_price, cached_price, output_price = PRICES[row["model"]]
    k = Decimal(1000)
    assert row["status"] == "success" and row["usage_source"] == "provider"
    assert Decimal(str(row["input_cost"])) == Decimal(row["input_tokens"]) * input_price / k
    assert Decimal(str(row["cached_input_cost"])) == Decimal(row["cached_input_tokens"]) * cached_price / k
    assert Decimal(str(row["output_cost"])) == Decimal(row["output_tokens"]) * output_price / k
    expected = (Decimal(row["input_tokens"]) * input_price + Decimal(row["cached_input_tokens"]) * cached_price
                + Decimal(row["output_tokens"]) * output_price) / k
    assert Decimal(str(row["total_cost"])) == expected
    assert Decimal(str(row["total_cost_reporting"])) == expected  # CNY is the reporting currency
    assert row["api"] == "responses"
    if usage is not None:  # Responses input_tokens include cached ones
        assert usage.input_tokens == row["input_tokens"] + row["cached_input_tokens"]
        assert usage.input_tokens_details.cached_tokens == row["cached_input_tokens"]
        assert usage.output_tokens == row["output_tokens"]
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_create_answers_a_response_with_usage_and_bills_it(client, gateway):
    raw = client.responses.with_raw_response.create(model="deepseek-v2", input="Say hello to the gateway.",
                                                    instructions="Be brief.", max_output_tokens=100)
    response = raw.parse()
    assert response.object == "response" and response.status == "completed" and response.id.startswith("resp_")
    assert response.output_text and response.output[0].type == "message"
    assert raw.headers["x-gateway-provider"] == "deepseek"
    row = ledger_rows(gateway, 1)[0]
    assert_billed_exactly(row, response.usage)
    assert Decimal(raw.headers["x-gateway-cost"]) == Decimal(str(row["total_cost_reporting"]))


def test_vendor_receives_a_chat_body_translated_from_the_response_request(client, fresh_vendors):
    client.responses.create(model="deepseek-v2", input=[{"role": "developer", "content": "rules"},
                                                        {"role": "user", "content": "hi"}],
                            instructions="sys", max_output_tokens=30, metadata={"trace": "t1"}, store=True)
    body = fresh_vendors.stats("deepseek")["last_body"]
    assert body["messages"] == [{"role": "system", "content": "sys"}, {"role": "system", "content": "rules"},
                                {"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 30 and body["model"] == "deepseek-chat"
    assert "metadata" not in body and "store" not in body and "input" not in body


def test_length_cut_is_an_incomplete_response(client):
    response = client.responses.create(model="deepseek-v2", input="Tell me a long story about routers.",
                                       max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 16


def test_stream_is_the_responses_event_sequence_and_bills_it(client, gateway):
    with client.responses.stream(model="deepseek-v2", input="Stream a short greeting.", max_output_tokens=100) as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    row = ledger_rows(gateway, 1)[0]
    assert row["stream"] in (1, True)
    assert_billed_exactly(row, final.usage)


def test_function_tool_round_trip(client, gateway, fresh_vendors):
    first = client.responses.create(model="deepseek-v2", input="What is the weather in Paris?",
                                    tools=[WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"] == "Paris"
    sent_tools = fresh_vendors.stats("deepseek")["last_body"]["tools"]
    assert sent_tools[0]["function"]["name"] == "get_weather"  # chat's nested shape upstream
    history: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "22 C and sunny"})
    second = client.responses.create(model="deepseek-v2", input=history, tools=[WEATHER_TOOL])
    assert second.status == "completed" and "22 C and sunny" in second.output_text
    chat = fresh_vendors.stats("deepseek")["last_body"]["messages"]
    assert chat[1]["tool_calls"][0]["id"] == calls[0].call_id and chat[2]["role"] == "tool"
    rows = ledger_rows(gateway, 2)
    assert len(rows) == 2
    for row, resp in zip(rows, (first, second)):
        assert_billed_exactly(row, resp.usage)


def test_streamed_function_call_arrives_as_argument_deltas(client):
    with client.responses.stream(model="deepseek-v2", input="Use the weather tool for Rome.",
                                 tools=[WEATHER_TOOL]) as s:
        events = list(s)
        final = s.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert json.loads(call.arguments)["city"] == "Rome"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments


class Capital(BaseModel):
    country: str
    capital: str
    population_millions: float


def test_text_format_json_schema_parses(client, gateway):
    parsed = client.responses.parse(model="deepseek-v2", input="The capital of France, as JSON.",
                                    text_format=Capital)
    assert isinstance(parsed.output_parsed, Capital)
    assert_billed_exactly(ledger_rows(gateway, 1)[0], parsed.usage)


@pytest.mark.parametrize("kwargs,param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
])
def test_stateful_and_hosted_features_are_refused_with_400_unsupported_parameter(client, gateway, fresh_vendors,
                                                                                kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="deepseek-v2", input="hi", **kwargs)
    assert info.value.status_code == 400
    assert info.value.code == "unsupported_parameter" and info.value.param == param
    assert fresh_vendors.stats("deepseek")["requests"] == 0


def test_failure_after_the_first_byte_ends_with_response_failed(fresh_vendors):
    fresh_vendors.control("deepseek", "drop_mid_stream", count=1)
    with GatewayThread(demo_config(fresh_vendors)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        events = list(client.responses.create(model="deepseek-v2", input="Stream a long answer please.",
                                              max_output_tokens=200, stream=True))
        assert events[0].type == "response.created"
        assert events[-1].type == "response.failed"
        assert events[-1].response.error is not None and "deepseek" in events[-1].response.error.message
        row = ledger_rows(gw, 1)[0]
        assert row["status"] == "stream_error" and row["output_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_vendor_failure_before_the_first_byte_falls_back(fresh_vendors, stream):
    fresh_vendors.control("deepseek", "error_500", count=1)
    with GatewayThread(demo_config(fresh_vendors)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        raw = client.responses.with_raw_response.create(model="premium", input="hi", max_output_tokens=100,
                                                        stream=stream)
        assert raw.headers["x-gateway-provider"] == "volcengine" and raw.headers["x-gateway-attempts"] == "2"
        if stream:
            events = list(raw.parse())
            assert events[-1].type == "response.completed" and events[-1].response.output_text
        else:
            assert raw.parse().output_text
        row = ledger_rows(gw, 1)[0]
        assert row["provider"] == "volcengine" and row["attempts"] == 2


def test_every_attempt_failing_is_a_502_in_openai_format(fresh_vendors):
    for provider in ("deepseek", "volcengine"):
        fresh_vendors.control(provider, "error_500", count=5)
    with GatewayThread(demo_config(fresh_vendors)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.responses.create(model="premium", input="hi", max_output_tokens=100)
        assert info.value.status_code == 502
        assert info.value.body["code"] == "upstream_unavailable" and "deepseek" in info.value.body["message"]


def test_finance_report_groups_responses_apart_from_chat(client, gateway):
    client.responses.create(model="auto", input="hello", max_output_tokens=100)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=100)
    rows = ledger_rows(gateway, 2)
    url = f"{gateway.url}/admin/reports/spend?from=2000-01-01&to=2100-01-01&group_by=api&format=csv"
    text = httpx.get(url, headers={"Authorization": "Bearer demo-admin-key"}).text
    report = {r["api"]: r for r in csv.DictReader(io.StringIO(text))}
    row = next(r for r in rows if r["api"] == "responses")
    assert report["responses"]["requests"] == "1" and report["chat"]["requests"] == "1"
    assert Decimal(report["responses"]["total_cost"]) == Decimal(str(row["total_cost_reporting"]))
