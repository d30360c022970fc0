"""JSON modes: the generated document validates against the schema (table-driven), directly and over HTTP."""

from __future__ import annotations

import json
from typing import Any, Literal, Optional

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from gateway.demo import textsim
from gateway.demo.schema_values import value_for

SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("flat", {"type": "object", "required": ["name", "age", "score", "active"], "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "score": {"type": "number"},
        "active": {"type": "boolean"}}}),
    ("enum-and-const", {"type": "object", "required": ["size", "kind"], "properties": {
        "size": {"enum": ["S", "M", "L"]}, "kind": {"const": "shirt"}}}),
    ("bounds", {"type": "object", "required": ["n", "x", "pct", "code"], "properties": {
        "n": {"type": "integer", "minimum": 100, "maximum": 200}, "x": {"type": "number", "exclusiveMaximum": 1},
        "pct": {"type": "integer", "exclusiveMinimum": 0, "maximum": 100, "multipleOf": 5},
        "code": {"type": "string", "minLength": 80, "maxLength": 90}}}),
    ("arrays", {"type": "object", "required": ["tags", "matrix", "pair"], "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 5},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}}}),
    ("nested", {"type": "object", "required": ["order"], "properties": {"order": {
        "type": "object", "required": ["id", "lines", "customer"], "additionalProperties": False, "properties": {
            "id": {"type": "string", "format": "uuid"},
            "customer": {"type": "object", "required": ["email"],
                         "properties": {"email": {"type": "string", "format": "email"}}},
            "lines": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["sku", "qty"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}}}}}}),
    ("nullable-and-unions", {"type": "object", "required": ["a", "b", "c"], "properties": {
        "a": {"type": ["string", "null"]}, "b": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        "c": {"oneOf": [{"type": "boolean"}, {"type": "string"}]}}}),
    ("refs-and-recursion", {"$defs": {"Node": {"type": "object", "required": ["label", "children"], "properties": {
        "label": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "type": "object", "required": ["root"], "properties": {"root": {"$ref": "#/$defs/Node"}}}),
    ("all-of", {"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
                          {"required": ["b"], "properties": {"b": {"type": "integer"}}}]}),
    ("formats", {"type": "object", "required": ["d", "t", "u"], "properties": {
        "d": {"type": "string", "format": "date"}, "t": {"type": "string", "format": "date-time"},
        "u": {"type": "string", "format": "uri"}}}),
    ("top-level-array", {"type": "array", "items": {"type": "number"}, "minItems": 1}),
]


@pytest.mark.parametrize(("label", "schema"), SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_generated_value_validates_against_the_schema(label, schema):
    value = value_for(schema, "a question about Paris")
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert value_for(schema, "a question about Paris") == value  # deterministic


@pytest.mark.parametrize(("label", "schema"), SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_json_schema_mode_answers_a_document_valid_against_the_schema(v, label, schema):
    fmt = {"type": "json_schema", "json_schema": {"name": label, "schema": schema, "strict": True}}
    r = v.chat("dashscope", "Describe an order", response_format=fmt)
    assert r.status_code == 200
    body = r.json()
    jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), schema)
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("provider", ["deepseek", "volcengine", "zhipu"])
def test_json_object_mode_answers_a_json_object_streamed_or_not(v, provider):
    plain = v.chat(provider, "Answer in JSON", response_format={"type": "json_object"}).json()
    assert isinstance(json.loads(plain["choices"][0]["message"]["content"]), dict)
    events, _ = v.stream_events(provider, response_format={"type": "json_object"})
    streamed = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert isinstance(json.loads(streamed), dict)


def test_a_json_schema_without_a_schema_object_is_a_400(v):
    r = v.chat("deepseek", "x", response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    assert r.status_code == 400


def test_completion_tokens_count_the_json_document(v):
    fmt = {"type": "json_schema", "json_schema": {"name": "flat", "schema": SCHEMAS[0][1]}}
    body = v.chat("deepseek", "x", response_format=fmt).json()
    assert body["usage"]["completion_tokens"] == textsim.count_tokens(body["choices"][0]["message"]["content"])


class Line(BaseModel):
    sku: str
    quantity: int


class Invoice(BaseModel):
    customer: str
    currency: Literal["CNY", "USD"]
    lines: list[Line]
    note: Optional[str]


def test_the_openai_sdk_parse_helper_gets_a_valid_pydantic_object(v):
    sdk = openai.OpenAI(base_url=v.cluster.urls["deepseek"], api_key="demo-deepseek-key", max_retries=0)
    r = sdk.chat.completions.parse(model="deepseek-chat", response_format=Invoice,
                                   messages=[{"role": "user", "content": "Invoice ACME for two widgets"}])
    invoice = r.choices[0].message.parsed
    assert isinstance(invoice, Invoice) and invoice.currency == "CNY" and invoice.lines
