"""Types and ranges of every forwarded field (gateway/http/validate.py): table-driven refusals naming the field,
valid bodies of every documented shape accepted, and properties over generated bodies (hypothesis): the parsers
answer a body with a ParsedRequest or a BadRequest, never anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from gateway.errors import BadRequest
from gateway.http.parse import parse_chat, parse_embedding
from gateway.http.validate import MAX_DEPTH
from gateway.tokens import TokenCounter

COUNTER = TokenCounter()
NO_HEADERS = Headers({})
USER = {"role": "user", "content": "Hello"}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "d",
                                         "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode()  # not orjson: it cannot write integers beyond 64 bits, a client can


def chat(payload: Any) -> Any:
    raw = payload if isinstance(payload, bytes) else dumps(payload)
    return parse_chat(raw, NO_HEADERS, COUNTER, 256)


def embed(payload: Any) -> Any:
    return parse_embedding(dumps(payload), NO_HEADERS, COUNTER)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [USER], **extra}


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


BAD_CHAT = [
    ("temperature-text", body(temperature="hot"), "temperature"),
    ("temperature-high", body(temperature=2.5), "temperature"),
    ("temperature-negative", body(temperature=-0.1), "temperature"),
    ("temperature-bool", body(temperature=True), "temperature"),
    ("top-p-high", body(top_p=1.01), "top_p"),
    ("n-zero", body(n=0), "n"),
    ("n-huge", body(n=10_000), "n"),
    ("n-float", body(n=2.0), "n"),
    ("max-tokens-huge", body(max_tokens=2**40), "max_tokens"),
    ("presence-penalty", body(presence_penalty=3), "presence_penalty"),
    ("frequency-penalty", body(frequency_penalty=-2.01), "frequency_penalty"),
    ("seed-text", body(seed="42"), "seed"),
    ("seed-beyond-64-bits", body(seed=2**64), "seed"),
    ("stop-number", body(stop=5), "stop"),
    ("stop-five", body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("stop-mixed", body(stop=["a", 1]), "stop"),
    ("logit-bias-list", body(logit_bias=[1]), "logit_bias"),
    ("logit-bias-key", body(logit_bias={"abc": 1}), "logit_bias"),
    ("logit-bias-range", body(logit_bias={"50256": 101}), "logit_bias.50256"),
    ("user-number", body(user=7), "user"),
    ("stream-text", body(stream="true"), "stream"),
    ("stream-options-usage-text", body(stream=True, stream_options={"include_usage": "yes"}),
     "stream_options.include_usage"),
    ("response-format-string", body(response_format="json"), "response_format"),
    ("response-format-type", body(response_format={"type": "yaml"}), "response_format.type"),
    ("response-format-type-list", body(response_format={"type": ["json_object"]}), "response_format.type"),
    ("json-schema-without-name", body(response_format={"type": "json_schema", "json_schema": {}}),
     "response_format.json_schema.name"),
    ("json-schema-schema-text", body(response_format={"type": "json_schema",
                                                      "json_schema": {"name": "x", "schema": "{}"}}),
     "response_format.json_schema.schema"),
    ("tools-object", body(tools={"type": "function"}), "tools"),
    ("tool-not-function", body(tools=[{"type": "retrieval"}]), "tools[0].type"),
    ("tool-without-function", body(tools=[{"type": "function"}]), "tools[0].function"),
    ("tool-name-spaces", body(tools=[{"type": "function", "function": {"name": "get weather"}}]),
     "tools[0].function.name"),
    ("tool-name-long", body(tools=[{"type": "function", "function": {"name": "x" * 65}}]), "tools[0].function.name"),
    ("tool-parameters-text", body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
     "tools[0].function.parameters"),
    ("too-many-tools", body(tools=[TOOL] * 129), "tools"),
    ("tool-choice-word", body(tool_choice="always"), "tool_choice"),
    ("tool-choice-number", body(tool_choice=1), "tool_choice"),
    ("tool-choice-without-name", body(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name"),
    ("functions-not-list", body(functions="f"), "functions"),
    ("function-call-word", body(function_call="maybe"), "function_call"),
    ("parallel-tool-calls-text", body(parallel_tool_calls="no"), "parallel_tool_calls"),
    ("metadata-number-value", body(metadata={"k": 1}), "metadata.k"),
    ("message-without-role", body(messages=[{"content": "hi"}]), "messages[0].role"),
    ("message-unknown-role", body(messages=[{"role": "root", "content": "hi"}]), "messages[0].role"),
    ("message-role-list", body(messages=[{"role": ["user"], "content": "hi"}]), "messages[0].role"),
    ("user-without-content", body(messages=[{"role": "user"}]), "messages[0].content"),
    ("content-number", body(messages=[{"role": "user", "content": 42}]), "messages[0].content"),
    ("content-object", body(messages=[{"role": "user", "content": {"text": "hi"}}]), "messages[0].content"),
    ("part-not-object", body(messages=[{"role": "user", "content": ["hi"]}]), "messages[0].content[0]"),
    ("part-unknown-type", body(messages=[{"role": "user", "content": [{"type": "video", "video": {}}]}]),
     "messages[0].content[0].type"),
    ("part-type-object", body(messages=[{"role": "user", "content": [{"type": {"x": 1}}]}]),
     "messages[0].content[0].type"),
    ("text-part-number", body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text"),
    ("image-part-without-url", body(messages=[{"role": "user", "content": [{"type": "image_url",
                                                                            "image_url": {}}]}]),
     "messages[0].content[0].image_url.url"),
    ("image-in-system", body(messages=[{"role": "system", "content": [{"type": "image_url",
                                                                        "image_url": {"url": "x"}}]}]),
     "messages[0].content[0].type"),
    ("name-number", body(messages=[{"role": "user", "content": "hi", "name": 3}]), "messages[0].name"),
    ("tool-message-without-id", body(messages=[USER, {"role": "tool", "content": "42"}]),
     "messages[1].tool_call_id"),
    ("tool-calls-on-user", body(messages=[{"role": "user", "content": "x", "tool_calls": [CALL]}]),
     "messages[0].tool_calls"),
    ("tool-calls-object", body(messages=[USER, {"role": "assistant", "content": None, "tool_calls": CALL}]),
     "messages[1].tool_calls"),
    ("tool-call-arguments-object", body(messages=[USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": {}}}]}]), "messages[1].tool_calls[0].function.arguments"),
    ("assistant-without-anything", body(messages=[USER, {"role": "assistant"}]), "messages[1].content"),
    ("model-too-long", body(model="m" * 257), "model"),
    ("nesting-beyond-the-limit", body(extension=nested(MAX_DEPTH + 1)), None),
]


@pytest.mark.parametrize(("payload", "param"), [r[1:] for r in BAD_CHAT], ids=[r[0] for r in BAD_CHAT])
def test_a_wrong_type_or_range_is_a_bad_request_naming_the_field(payload: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        chat(payload)
    assert caught.value.param == param
    if param is not None:
        assert f"'{param}'" in caught.value.message


GOOD_CHAT = [
    ("plain", body()),
    ("every-sampling-field", body(temperature=0, top_p=1, n=2, max_tokens=0, max_completion_tokens=10,
                                  presence_penalty=-2, frequency_penalty=2, seed=-(2**63), stop="\n",
                                  logit_bias={"50256": -100}, user="u", logprobs=True, top_logprobs=20,
                                  parallel_tool_calls=False, store=False, metadata={"k": "v"})),
    ("nulls-mean-absent", body(temperature=None, stop=None, tools=None, stream=None, seed=None)),
    ("stop-list", body(stop=["a", "b", "c", "d"])),
    ("tools-and-choice", body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})),
    ("tool-choice-words", body(tools=[TOOL], tool_choice="required")),
    ("legacy-functions", body(functions=[TOOL["function"]], function_call={"name": "get_weather"})),
    ("tool-round-trip", body(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                       {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])),
    ("content-parts", body(messages=[{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                                     {"role": "user", "name": "ann", "content": [
                                         {"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                                         {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]},
                                     {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                                     {"role": "developer", "content": "d"}])),
    ("json-schema", body(response_format={"type": "json_schema",
                                          "json_schema": {"name": "r", "schema": {"type": "object"}}})),
    ("stream-with-usage", body(stream=True, stream_options={"include_usage": True})),
    ("vendor-extension-fields", body(enable_search=True, thinking={"type": "enabled"}, top_k=5)),
    ("nesting-at-the-limit", body(extension=nested(MAX_DEPTH - 1))),
]


@pytest.mark.parametrize("payload", [r[1] for r in GOOD_CHAT], ids=[r[0] for r in GOOD_CHAT])
def test_every_documented_shape_is_accepted_and_forwarded_unchanged(payload: dict[str, Any]) -> None:
    parsed = chat(payload)
    assert parsed.body == payload


BAD_EMBEDDINGS = [
    ("input-missing", {"model": "e"}, "input"),
    ("input-number", {"model": "e", "input": 5}, "input"),
    ("input-empty-list", {"model": "e", "input": []}, "input"),
    ("input-mixed", {"model": "e", "input": ["a", 1]}, "input"),
    ("input-nested-text", {"model": "e", "input": [["a"]]}, "input[0]"),
    ("input-too-many", {"model": "e", "input": ["a"] * 2049}, "input"),
    ("encoding-format", {"model": "e", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ("dimensions-zero", {"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
    ("user-list", {"model": "e", "input": "a", "user": ["u"]}, "user"),
]


@pytest.mark.parametrize(("payload", "param"), [r[1:] for r in BAD_EMBEDDINGS], ids=[r[0] for r in BAD_EMBEDDINGS])
def test_embedding_input_shapes_are_checked(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        embed(payload)
    assert caught.value.param == param


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_every_embedding_input_shape_is_accepted(value: Any) -> None:
    assert embed({"model": "e", "input": value, "encoding_format": "float", "dimensions": 8}).body["input"] == value


# ---- properties ---------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=6,
)
FIELDS = st.sampled_from(["model", "messages", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens",
                          "stop", "presence_penalty", "frequency_penalty", "logit_bias", "seed", "response_format",
                          "stream", "stream_options", "user", "tools", "tool_choice", "functions", "function_call",
                          "parallel_tool_calls", "metadata", "logprobs", "top_logprobs", "gateway", "input",
                          "encoding_format", "dimensions"])
SCALAR = st.none() | st.booleans() | st.integers() | st.text(max_size=6)
MESSAGE = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "tool", "x"]) | SCALAR,
                                              "content": SCALAR | st.lists(st.dictionaries(
                                                  st.sampled_from(["type", "text", "image_url"]),
                                                  st.sampled_from(["text", "image_url", "x"]) | SCALAR), max_size=2),
                                              "tool_calls": SCALAR | st.lists(SCALAR, max_size=2),
                                              "tool_call_id": SCALAR})
BODIES = st.dictionaries(FIELDS, JSON, max_size=6) | st.fixed_dictionaries(
    {"model": st.just("auto"), "messages": st.lists(MESSAGE, max_size=3)},
    optional={f: JSON for f in ["temperature", "stop", "tools", "response_format"]})


@settings(max_examples=250)
@given(BODIES)
def test_any_json_body_is_parsed_or_refused_as_a_bad_request(payload: dict[str, Any]) -> None:
    for parse in (chat, embed):
        try:
            parse(payload)
        except BadRequest:
            pass


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_as_a_bad_request(raw: bytes) -> None:
    try:
        parse_chat(raw, NO_HEADERS, COUNTER, 256)
    except BadRequest:
        pass


@settings(max_examples=200)
@given(st.sampled_from(["temperature", "top_p", "n", "max_tokens", "stop", "seed", "stream", "user",
                        "tools", "tool_choice", "response_format", "logit_bias", "presence_penalty"]),
       st.sampled_from([{"x": [1]}, "?", -1e300, 1e300, [None], True]))
def test_a_wrongly_typed_known_field_is_always_refused_with_its_name(field: str, value: Any) -> None:
    if (field, value) in (("user", "?"), ("stop", "?"), ("stream", True)):
        return  # the valid ones among the generated values
    with pytest.raises(BadRequest) as caught:
        chat(body(**{field: value}))
    assert caught.value.param is not None and caught.value.param.startswith(field)


def test_deep_nesting_is_found_whatever_the_brackets_count_says() -> None:
    """The bracket count is only a shortcut for shallow texts: a deep body is refused through either path."""
    from gateway.http.validate import check_depth

    deep = body(extension=nested(MAX_DEPTH + 1))
    with pytest.raises(BadRequest):
        check_depth(deep)
    with pytest.raises(BadRequest):
        check_depth(deep, dumps(deep))
    check_depth(body(extension=nested(MAX_DEPTH - 1)), dumps(body(extension=nested(MAX_DEPTH - 1))))
