"""Request parsing: forbidden fields, types, constraints (body and X-Gateway-* headers), capabilities, usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from starlette.datastructures import Headers

from gateway.domain import Constraints
from gateway.errors import BadRequest
from gateway.http.parse import parse_chat, parse_constraints, parse_embedding, parse_json_body
from gateway.tokens import TokenCounter

D = Decimal
DEFAULT_OUTPUT = 256
NO_HEADERS = Headers({})


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "Hello there"}], **extra}


def chat(counter: TokenCounter, payload: Any, headers: Headers = NO_HEADERS):  # type: ignore[no-untyped-def]
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return parse_chat(raw, headers, counter, DEFAULT_OUTPUT)


# ---- forbidden fields and bad types ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["api_base", "api_key", "base_url", "api_version", "organization",
                                   "custom_llm_provider", "extra_headers"])
def test_fields_that_steer_the_upstream_are_refused_naming_the_field(counter: TokenCounter, field: str) -> None:
    with pytest.raises(BadRequest) as exc:
        chat(counter, body(**{field: "https://evil.example"}))
    assert exc.value.param == field
    assert f"'{field}'" in exc.value.message


def test_forbidden_fields_are_refused_on_embeddings_too(counter: TokenCounter) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_embedding(orjson.dumps({"model": "e", "input": "x", "api_key": "sk-x"}), NO_HEADERS, counter)
    assert exc.value.param == "api_key"


BAD_BODIES = [
    ("not-json", b"{model: auto", None, "not valid JSON"),
    ("not-an-object", b"[1, 2]", None, "JSON object"),
    ("model-missing", {"messages": [{"role": "user", "content": "x"}]}, "model", "'model'"),
    ("model-not-string", body(model=5), "model", "'model'"),
    ("model-empty", body(model=""), "model", "'model'"),
    ("messages-missing", {"model": "auto"}, "messages", "'messages'"),
    ("messages-empty", body(messages=[]), "messages", "'messages'"),
    ("messages-not-list", body(messages="hi"), "messages", "'messages'"),
    ("message-not-object", body(messages=["hi"]), "messages[0]", "'messages[0]'"),
    ("stream-not-bool", body(stream="yes"), "stream", "'stream'"),
    ("stream-options-not-object", body(stream=True, stream_options=True), "stream_options", "'stream_options'"),
    ("max-tokens-string", body(max_tokens="100"), "max_tokens", "'max_tokens'"),
    ("max-tokens-negative", body(max_tokens=-1), "max_tokens", "'max_tokens'"),
    ("max-tokens-float", body(max_tokens=1.5), "max_tokens", "'max_tokens'"),
    ("max-tokens-bool", body(max_tokens=True), "max_tokens", "'max_tokens'"),
    ("max-completion-tokens-string", body(max_completion_tokens="9"), "max_completion_tokens",
     "'max_completion_tokens'"),
    ("gateway-not-object", body(gateway="cheap"), "gateway", "'gateway'"),
    ("gateway-unknown-option", body(gateway={"provider": "x"}), "gateway", "unknown gateway option 'provider'"),
    ("min-quality-text", body(gateway={"min_quality": "high"}), "gateway.min_quality", "'min_quality'"),
    ("min-quality-negative", body(gateway={"min_quality": -5}), "gateway.min_quality", "'min_quality'"),
    ("min-context-float", body(gateway={"min_context": 1.5}), "gateway.min_context", "'min_context'"),
    ("providers-number", body(gateway={"providers": 3}), "gateway.providers", "'providers'"),
    ("providers-mixed-list", body(gateway={"providers": ["a", 1]}), "gateway.providers", "'providers'"),
    ("max-cost-text", body(gateway={"max_cost": "cheap"}), "gateway.max_cost", "'max_cost'"),
    ("max-cost-negative", body(gateway={"max_cost": -0.01}), "gateway.max_cost", "'max_cost'"),
    ("max-cost-nan", body(gateway={"max_cost": "NaN"}), "gateway.max_cost", "'max_cost'"),
    ("max-cost-bool", body(gateway={"max_cost": True}), "gateway.max_cost", "'max_cost'"),
]


@pytest.mark.parametrize(("payload", "param", "words"), [r[1:] for r in BAD_BODIES], ids=[r[0] for r in BAD_BODIES])
def test_bad_bodies_are_refused_as_bad_request(counter: TokenCounter, payload: Any, param: str | None,
                                               words: str) -> None:
    with pytest.raises(BadRequest) as exc:
        chat(counter, payload)
    assert exc.value.param == param
    assert words in exc.value.message


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"X-Gateway-Min-Quality": "high"}, "gateway.min_quality"),
        ({"X-Gateway-Min-Context": "-1"}, "gateway.min_context"),
        ({"X-Gateway-Max-Cost": "free"}, "gateway.max_cost"),
    ],
)
def test_bad_constraint_headers_are_refused_as_bad_request(counter: TokenCounter, headers: dict, param: str) -> None:
    with pytest.raises(BadRequest) as exc:
        chat(counter, body(), Headers(headers))
    assert exc.value.param == param


@pytest.mark.parametrize(
    ("payload", "param"),
    [({"model": "e"}, "input"), ({"model": "e", "input": []}, "input"), ({"model": "e", "input": 5}, "input"),
     ({"input": "x"}, "model")],
)
def test_bad_embedding_bodies_are_refused(counter: TokenCounter, payload: dict, param: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_embedding(orjson.dumps(payload), NO_HEADERS, counter)
    assert exc.value.param == param


def test_parse_json_body_returns_the_object() -> None:
    assert parse_json_body(b'{"model": "x", "n": 1}') == {"model": "x", "n": 1}


# ---- constraints ------------------------------------------------------------------------------------------------


CONSTRAINT_CASES = [
    ("none", {}, {}, Constraints()),
    ("body", {"min_quality": 85, "min_context": 128_000, "providers": ["deepseek", "zhipu"], "max_cost": "0.01"},
     {}, Constraints(85, 128_000, frozenset({"deepseek", "zhipu"}), D("0.01"))),
    ("headers", {}, {"X-Gateway-Min-Quality": "85", "X-Gateway-Min-Context": "128000",
                     "X-Gateway-Providers": "deepseek, zhipu,,", "X-Gateway-Max-Cost": "0.0005005"},
     Constraints(85, 128_000, frozenset({"deepseek", "zhipu"}), D("0.0005005"))),
    ("lowercase-headers", {}, {"x-gateway-min-quality": "70"}, Constraints(min_quality=70)),
    ("body-wins-per-key", {"min_quality": 90, "providers": ["zhipu"]},
     {"X-Gateway-Min-Quality": "50", "X-Gateway-Providers": "deepseek", "X-Gateway-Max-Cost": "1"},
     Constraints(min_quality=90, providers=frozenset({"zhipu"}), max_cost=D("1"))),
    ("body-providers-comma-string", {"providers": "a,b"}, {}, Constraints(providers=frozenset({"a", "b"}))),
    ("max-cost-float-keeps-its-digits", {"max_cost": 0.1}, {}, Constraints(max_cost=D("0.1"))),
    ("max-cost-int", {"max_cost": 2}, {}, Constraints(max_cost=D("2"))),
    ("min-quality-numeric-string", {"min_quality": " 80 "}, {}, Constraints(min_quality=80)),
    ("null-in-body-is-no-constraint", {"min_quality": None}, {"X-Gateway-Min-Quality": "60"}, Constraints()),
]


@pytest.mark.parametrize(("field", "headers", "expected"), [r[1:] for r in CONSTRAINT_CASES],
                         ids=[r[0] for r in CONSTRAINT_CASES])
def test_constraints_from_body_field_and_headers(counter: TokenCounter, field: dict, headers: dict,
                                                 expected: Constraints) -> None:
    parsed = chat(counter, body(gateway=field), Headers(headers))
    assert parsed.facts.constraints == expected
    assert parse_constraints(field, Headers(headers)) == expected


def test_max_cost_is_an_exact_decimal(counter: TokenCounter) -> None:
    parsed = chat(counter, body(), Headers({"X-Gateway-Max-Cost": "0.0000056"}))
    assert type(parsed.facts.constraints.max_cost) is Decimal
    assert str(parsed.facts.constraints.max_cost) == "0.0000056"


def test_embedding_constraints_come_from_headers_too(counter: TokenCounter) -> None:
    parsed = parse_embedding(orjson.dumps({"model": "e", "input": "x", "gateway": {"max_cost": "0.5"}}),
                             Headers({"X-Gateway-Providers": "zhipu"}), counter)
    assert parsed.facts.constraints == Constraints(providers=frozenset({"zhipu"}), max_cost=D("0.5"))
    assert "gateway" not in parsed.body
    assert (parsed.facts.mode, parsed.facts.expected_output_tokens, parsed.stream) == ("embedding", 0, False)


# ---- forwarded body -------------------------------------------------------------------------------------------------


def test_gateway_field_is_removed_from_the_forwarded_body_and_the_rest_kept(counter: TokenCounter) -> None:
    original = body(gateway={"min_quality": 80}, temperature=0.2, user="u-1", max_tokens=100)
    parsed = chat(counter, original)
    assert "gateway" not in parsed.body
    expected = dict(original)
    del expected["gateway"]
    assert parsed.body == expected


# ---- capabilities ---------------------------------------------------------------------------------------------------

IMAGE_MSG = {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}

CAPABILITY_CASES = [
    ("plain", body(), set()),
    ("tools", body(tools=[TOOL]), {"tools"}),
    ("empty-tools", body(tools=[]), set()),
    ("legacy-functions", body(functions=[{"name": "f", "parameters": {}}]), {"tools"}),
    ("json-object", body(response_format={"type": "json_object"}), {"json_mode"}),
    ("json-schema", body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
     {"json_mode"}),
    ("text-format", body(response_format={"type": "text"}), set()),
    ("image-part", body(messages=[IMAGE_MSG]), {"vision"}),
    ("text-parts-only", body(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]), set()),
    ("image-in-a-later-message", body(messages=[{"role": "system", "content": "s"}, IMAGE_MSG]), {"vision"}),
    ("all-three", body(messages=[IMAGE_MSG], tools=[TOOL], response_format={"type": "json_object"}),
     {"tools", "json_mode", "vision"}),
]


@pytest.mark.parametrize(("payload", "expected"), [r[1:] for r in CAPABILITY_CASES],
                         ids=[r[0] for r in CAPABILITY_CASES])
def test_capabilities_the_request_uses_are_detected(counter: TokenCounter, payload: dict, expected: set) -> None:
    assert chat(counter, payload).facts.capabilities == frozenset(expected)


# ---- output tokens and usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "requested", "expected"),
    [
        ({}, None, DEFAULT_OUTPUT),
        ({"max_tokens": 100}, 100, 100),
        ({"max_completion_tokens": 300}, 300, 300),
        ({"max_completion_tokens": 300, "max_tokens": 100}, 300, 300),  # the newer field wins
        ({"max_tokens": 0}, 0, 0),
        ({"max_tokens": None}, None, DEFAULT_OUTPUT),
    ],
)
def test_requested_and_expected_output_tokens(counter: TokenCounter, extra: dict, requested: int | None,
                                              expected: int) -> None:
    facts = chat(counter, body(**extra)).facts
    assert (facts.requested_output_tokens, facts.expected_output_tokens) == (requested, expected)


@pytest.mark.parametrize(
    ("extra", "stream", "wants_usage"),
    [
        ({}, False, False),
        ({"stream": False, "stream_options": {"include_usage": True}}, False, False),
        ({"stream": True}, True, False),
        ({"stream": True, "stream_options": {}}, True, False),
        ({"stream": True, "stream_options": {"include_usage": False}}, True, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
    ],
)
def test_include_usage_is_detected_only_on_streams_that_ask(counter: TokenCounter, extra: dict, stream: bool,
                                                             wants_usage: bool) -> None:
    parsed = chat(counter, body(**extra))
    assert (parsed.stream, parsed.client_wants_usage) == (stream, wants_usage)


def test_facts_carry_the_model_mode_and_an_estimated_prompt(counter: TokenCounter) -> None:
    facts = chat(counter, body(model="premium")).facts
    assert (facts.model, facts.mode) == ("premium", "chat")
    assert facts.prompt_tokens == counter.count_messages([{"role": "user", "content": "Hello there"}])
    assert facts.prompt_tokens > 0
