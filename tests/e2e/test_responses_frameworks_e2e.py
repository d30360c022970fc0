"""Agent frameworks on POST /v1/responses: the OpenAI Agents SDK (default Responses model, default settings, tracing
off so nothing leaves the machine) runs a tool-using agent to completion, and LangChain's `ChatOpenAI` on the
Responses API returns structured output. Both billed exactly (tests/e2e/test_responses_e2e.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.conftest import GatewayThread, demo_config, ledger_rows
from tests.e2e.test_responses_e2e import assert_billed_exactly


@pytest.fixture()
def agents_requests(gateway: GatewayThread) -> Iterator[list[str]]:
    """The Agents SDK's default OpenAI client pointed at the gateway (restored afterwards), tracing disabled; yields
    the paths of the requests it sends."""
    from agents import set_default_openai_client, set_tracing_disabled
    from agents.models import _openai_shared

    previous = _openai_shared.get_default_openai_client()
    set_tracing_disabled(True)
    paths: list[str] = []

    async def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-app-own-key", max_retries=0,
                                http_client=httpx.AsyncClient(event_hooks={"request": [record]}))
    set_default_openai_client(client, use_for_tracing=False)
    try:
        yield paths
    finally:
        _openai_shared._default_openai_client = previous


def weather_agent(calls: list[str]) -> Any:
    from agents import Agent, function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"22 C and sunny in {city}"

    return Agent(name="forecaster", instructions="Answer weather questions with the tool.", tools=[get_weather],
                 model="deepseek-v2")


def test_agents_sdk_runs_a_tool_using_agent_to_completion(agents_requests, gateway, fresh_vendors):
    from agents import Runner

    calls: list[str] = []
    result = asyncio.run(Runner.run(weather_agent(calls), "What is the weather in Paris?"))
    assert agents_requests == ["/v1/responses", "/v1/responses"]  # its default model speaks the Responses API
    assert calls == ["Paris"]
    assert "22 C and sunny in Paris" in result.final_output
    assert fresh_vendors.stats("deepseek")["requests"] == 2  # the call, then the answer quoting its result
    rows = ledger_rows(gateway, 2)
    assert len(rows) == 2
    for row in rows:
        assert_billed_exactly(row)
    usage = result.context_wrapper.usage
    assert usage.input_tokens == sum(r["input_tokens"] + r["cached_input_tokens"] for r in rows)
    assert usage.output_tokens == sum(r["output_tokens"] for r in rows)


def test_agents_sdk_streamed_run_completes_the_tool_round_trip(agents_requests, gateway):
    from agents import Runner

    calls: list[str] = []

    async def run() -> Any:
        streamed = Runner.run_streamed(weather_agent(calls), "What is the weather in Rome?")
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed, kinds

    streamed, kinds = asyncio.run(run())
    assert agents_requests == ["/v1/responses", "/v1/responses"]
    assert calls == ["Rome"]
    assert "22 C and sunny in Rome" in streamed.final_output
    assert "raw_response_event" in kinds
    rows = ledger_rows(gateway, 2)
    assert len(rows) == 2 and all(r["stream"] in (1, True) for r in rows)
    for row in rows:
        assert_billed_exactly(row)


class City(BaseModel):
    name: str
    country: str
    population_millions: float


def test_langchain_structured_output_over_the_responses_api(gateway, fresh_vendors):
    from langchain_openai import ChatOpenAI

    paths: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: paths.append(r.url.path)]})
    llm = ChatOpenAI(model="deepseek-v2", base_url=gateway.url + "/v1", api_key="sk-app-own-key", max_retries=0,
                     use_responses_api=True, http_client=http)
    city = llm.with_structured_output(City).invoke("Describe Paris as JSON.")
    assert isinstance(city, City)
    assert paths == ["/v1/responses"]
    sent = fresh_vendors.stats("deepseek")["last_body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "City"
    assert_billed_exactly(ledger_rows(gateway, 1)[0])


def test_agents_sdk_default_model_and_settings_through_a_route_of_that_name(fresh_vendors):
    """An agent with no model at all: the SDK's default model name (a gpt-5 one, whose default settings add
    reasoning.effort and text.verbosity) served by a gateway route of that name."""
    from agents import Agent, Runner, set_default_openai_client, set_tracing_disabled
    from agents.models import _openai_shared
    from agents.models.default_models import get_default_model, get_default_model_settings

    default_model = get_default_model()
    assert get_default_model_settings().verbosity is not None  # the defaults this test is about

    def edit(data):
        data["routes"][default_model] = {"min_quality": 86}  # deepseek-v2 alone

    previous = _openai_shared.get_default_openai_client()
    with GatewayThread(demo_config(fresh_vendors, edit)) as gw:
        set_tracing_disabled(True)
        set_default_openai_client(openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0),
                                  use_for_tracing=False)
        try:
            calls: list[str] = []
            agent = weather_agent(calls)
            agent = Agent(name=agent.name, instructions=agent.instructions, tools=agent.tools)  # model: default
            result = asyncio.run(Runner.run(agent, "What is the weather in Oslo?"))
        finally:
            _openai_shared._default_openai_client = previous
        assert calls == ["Oslo"] and "22 C and sunny in Oslo" in result.final_output
        sent = fresh_vendors.stats("deepseek")["last_body"]
        assert sent["verbosity"] == get_default_model_settings().verbosity
        rows = ledger_rows(gw, 2)
        assert [r["route"] for r in rows] == [default_model, default_model]
        for row in rows:
            assert_billed_exactly(row)
