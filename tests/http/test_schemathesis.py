"""Schemathesis over the OpenAPI schema of every route, admin included, against a real `gateway serve` on loopback
(issue 15): generated valid and invalid requests never get a 5xx, and every error is in the OpenAI format
(Anthropic's on /v1/messages; the web console answers browsers with HTML pages, so there only "no 5xx" holds).

The handlers read their bodies themselves (no pydantic models on the hot path), so the served schema has no
request bodies; the test describes them (`BODIES`) before handing the schema to schemathesis, so it generates
bodies and not only empty requests. Bounded: a few examples per operation and generation mode.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.e2e.conftest import GatewayThread
from tests.faults.conftest import MODEL, faults_config
from tests.faults.vendor import LoopbackVendor

ADMIN = {"authorization": "Bearer admin-secret"}
EXAMPLES = 12

_MESSAGE = {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"enum": ["system", "user", "assistant", "tool", "developer"]},
                           "content": {"anyOf": [{"type": "string"},
                                                 {"type": "array", "items": {"type": "object"}}]},
                           "name": {"type": "string"}, "tool_call_id": {"type": "string"}}}
_CHAT = {"type": "object", "required": ["model", "messages"],
         "properties": {"model": {"anyOf": [{"enum": [MODEL, "auto"]}, {"type": "string"}]},
                        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
                        "temperature": {"type": "number"}, "top_p": {"type": "number"}, "n": {"type": "integer"},
                        "max_tokens": {"type": "integer"}, "stop": {"anyOf": [{"type": "string"},
                                                                              {"type": "array"}]},
                        "stream": {"type": "boolean"}, "tools": {"type": "array"},
                        "tool_choice": {}, "response_format": {"type": "object"}, "seed": {"type": "integer"},
                        "logit_bias": {"type": "object"}, "user": {"type": "string"},
                        "gateway": {"type": "object"}}}
_EMBEDDINGS = {"type": "object", "required": ["model", "input"],
               "properties": {"model": {"anyOf": [{"enum": [MODEL]}, {"type": "string"}]},
                              "input": {"anyOf": [{"type": "string"}, {"type": "array"}]},
                              "encoding_format": {"type": "string"}, "dimensions": {"type": "integer"}}}
_PRICE = {"type": "object", "required": ["provider", "model"],
          "properties": {"provider": {"enum": ["flaky", "steady"]}, "model": {"enum": [MODEL]},
                         "currency": {"type": "string"}, "per": {"type": "string"},
                         "input": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                         "output": {"anyOf": [{"type": "string"}, {"type": "number"}]}}}
_PRICES = {"type": "object", "required": ["prices"],
           "properties": {"prices": {"type": "array", "items": _PRICE, "maxItems": 2},
                          "fx_rates": {"type": "object"}, "effective_from": {"type": "string"}}}
_BUDGET = {"budget": {"anyOf": [{"type": "string"}, {"type": "number"}]},
           "budget_period": {"anyOf": [{"enum": ["day", "month"]}, {"type": "string"}]}}
_KEY = {"type": "object", "required": ["team"],
        "properties": {"team": {"type": "string"}, **_BUDGET, "rpm": {"type": "integer"}, "tpm": {"type": "integer"}}}
_TEAM = {"type": "object", "properties": _BUDGET}

BODIES = {("post", "/v1/chat/completions"): _CHAT, ("post", "/v1/embeddings"): _EMBEDDINGS,
          ("post", "/admin/route/explain"): _CHAT, ("put", "/admin/prices"): _PRICES,
          ("post", "/admin/keys"): _KEY, ("put", "/admin/teams/{team}"): _TEAM}


def described(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for (method, path), schema in BODIES.items():
        doc["paths"][path][method]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": schema}}}
    return doc


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    with LoopbackVendor() as vendor, GatewayThread(faults_config(vendor.url, vendor.url)) as gw:
        yield gw


@pytest.fixture(scope="module")
def operations(gateway: GatewayThread) -> list[Any]:
    schema = schemathesis.openapi.from_dict(described(gateway.app.openapi()))
    return [result.ok() for result in schema.get_all_operations()]


# Where the gateway checks every field the schema describes, a body that breaks the schema must be refused.
STRICT = {("post", "/v1/chat/completions"), ("post", "/v1/embeddings"), ("post", "/admin/route/explain")}


def check(case: Any, gw: GatewayThread, mode: GenerationMode) -> None:
    response = case.call(base_url=gw.url, headers=ADMIN, timeout=30)
    where = f"{case.method} {case.formatted_path} {case.body!r:.300}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:300]}"
    if mode is GenerationMode.NEGATIVE and (case.method.lower(), case.operation.path) in STRICT:
        assert response.status_code == 400, f"{where} was not refused: {response.status_code}"
    if response.status_code >= 400 and not case.operation.path.startswith("/console"):  # the console: HTML pages
        content_type = str(response.headers.get("content-type"))
        assert "application/json" in content_type, f"{where} -> {response.status_code} {content_type} {response.text[:200]}"
        body = response.json()
        if case.operation.path.startswith("/v1/messages"):  # Anthropic's shape on its own API
            assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, f"{where} -> {body}"
            return
        assert set(body) == {"error"}, f"{where} -> {body}"
        assert set(body["error"]) == {"message", "type", "param", "code"}, f"{where} -> {body}"


def test_every_route_is_in_the_fuzzed_schema(operations: list[Any]) -> None:
    found = {(op.method.lower(), op.path) for op in operations}
    assert set(BODIES) <= found and ("get", "/admin/reports/spend") in found and len(found) >= 16


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_generated_request_gets_a_5xx_and_every_error_is_in_the_openai_format(
        gateway: GatewayThread, operations: list[Any], mode: GenerationMode) -> None:
    fuzzed = set()
    for op in operations:
        method = op.method.lower()
        if mode is GenerationMode.NEGATIVE and (method, op.path) not in BODIES:
            continue  # only bodies can be made invalid (query and path parameters are free-form strings)

        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            check(case, gateway, mode)

        run()
        fuzzed.add((method, op.path))
    assert set(BODIES) <= fuzzed
