"""Usage in every vendor dialect, taken once (the last report), and what a stream passes on to the client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.domain import Usage
from gateway.metering import StreamMeter, usage_from_payload
from gateway.tokens import TokenCounter


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def chunk(content: str | None = None, *, usage: dict | None = None, finish: str | None = None,
          choices: bool = True, choice_usage: dict | None = None) -> bytes:
    obj: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    if choices:
        choice: dict[str, Any] = {"index": 0, "delta": {} if content is None else {"content": content},
                                  "finish_reason": finish}
        if choice_usage is not None:
            choice["usage"] = choice_usage
        obj["choices"] = [choice]
    else:
        obj["choices"] = []
    if usage is not None:
        obj["usage"] = usage
    return orjson.dumps(obj)


# ---- usage_from_payload ---------------------------------------------------------------------------------------------

USAGE_DIALECTS = [
    ("openai-plain", {"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
     Usage(10, 0, 5)),
    ("openai-cached", {"usage": {"prompt_tokens": 1_000, "completion_tokens": 20,
                                 "prompt_tokens_details": {"cached_tokens": 768}}},
     Usage(232, 768, 20)),
    ("openai-cached-zero", {"usage": {"prompt_tokens": 100, "completion_tokens": 2,
                                      "prompt_tokens_details": {"cached_tokens": 0}}},
     Usage(100, 0, 2)),
    ("openai-details-null", {"usage": {"prompt_tokens": 100, "completion_tokens": 2, "prompt_tokens_details": None}},
     Usage(100, 0, 2)),
    ("deepseek-cache-hit", {"usage": {"prompt_tokens": 500, "completion_tokens": 40, "prompt_cache_hit_tokens": 384,
                                      "prompt_cache_miss_tokens": 116}},
     Usage(116, 384, 40)),
    ("moonshot-in-choice", {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                         "usage": {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}}]},
     Usage(8, 0, 12)),
    ("responses-style", {"usage": {"input_tokens": 9, "output_tokens": 3,
                                   "input_tokens_details": {"cached_tokens": 4}}},
     Usage(5, 4, 3)),
    ("embedding", {"object": "list", "usage": {"prompt_tokens": 7, "total_tokens": 7}}, Usage(7, 0, 0)),
    ("cached-above-prompt-is-clamped", {"usage": {"prompt_tokens": 10, "completion_tokens": 1,
                                                  "prompt_tokens_details": {"cached_tokens": 50}}},
     Usage(0, 10, 1)),
    ("no-usage", {"choices": [{"index": 0, "delta": {"content": "hi"}}]}, None),
    ("usage-null", {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}, None),
    ("empty-choices", {"choices": [], "usage": None}, None),
    ("not-an-object", ["usage"], None),
]


@pytest.mark.parametrize(("payload", "expected"), [r[1:] for r in USAGE_DIALECTS], ids=[r[0] for r in USAGE_DIALECTS])
def test_usage_from_payload_reads_every_vendor_dialect(payload: Any, expected: Usage | None) -> None:
    assert usage_from_payload(payload) == expected


def test_input_plus_cached_input_equals_the_vendors_prompt_tokens() -> None:
    u = usage_from_payload({"usage": {"prompt_tokens": 1_234, "completion_tokens": 1,
                                      "prompt_cache_hit_tokens": 1_000}})
    assert u is not None and u.prompt_tokens == 1_234 and u.source == "provider"


# ---- StreamMeter ----------------------------------------------------------------------------------------------------


def feed_all(meter: StreamMeter, payloads: list[bytes]) -> list[bytes]:
    out = []
    for p in payloads:
        relayed = meter.feed(p)
        if relayed is not None:
            out.append(relayed)
    return out


CUMULATIVE = [  # some vendors repeat the running usage on every chunk
    chunk("Hel", usage={"prompt_tokens": 20, "completion_tokens": 1}),
    chunk("lo", usage={"prompt_tokens": 20, "completion_tokens": 2}),
    chunk("!", usage={"prompt_tokens": 20, "completion_tokens": 3}, finish="stop"),
    b"[DONE]",
]


@pytest.mark.parametrize("wants_usage", [True, False])
def test_cumulative_usage_on_every_chunk_gives_the_last_report_not_the_sum(wants_usage: bool,
                                                                          counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=wants_usage)
    feed_all(meter, CUMULATIVE)
    assert meter.final_usage(999, counter) == Usage(20, 0, 3, source="provider")


def openai_stream() -> list[bytes]:
    return [
        chunk("Hello"),
        chunk(" world", finish="stop"),
        chunk(choices=False, usage={"prompt_tokens": 11, "completion_tokens": 2,
                                    "prompt_tokens_details": {"cached_tokens": 3}}),
        b"[DONE]",
    ]


def test_usage_only_chunk_is_dropped_when_the_client_did_not_ask(counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=False)
    out = feed_all(meter, openai_stream())
    assert out == openai_stream()[:2] + [b"[DONE]"]
    assert meter.final_usage(0, counter) == Usage(8, 3, 2)


def test_usage_only_chunk_is_kept_when_the_client_asked(counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=True)
    out = feed_all(meter, openai_stream())
    assert out == openai_stream()
    assert orjson.loads(out[2])["usage"]["prompt_tokens"] == 11
    assert meter.final_usage(0, counter) == Usage(8, 3, 2)


@pytest.mark.parametrize(
    "payload",
    [
        chunk("!", usage={"prompt_tokens": 20, "completion_tokens": 3}, finish="stop"),
        chunk("", finish="stop", choice_usage={"prompt_tokens": 8, "completion_tokens": 12}),  # Moonshot
    ],
    ids=["top-level-usage", "usage-in-choice"],
)
def test_usage_is_stripped_from_content_chunks_when_the_client_did_not_ask(payload: bytes) -> None:
    meter = StreamMeter(client_wants_usage=False)
    relayed = meter.feed(payload)
    assert relayed is not None
    obj = orjson.loads(relayed)
    assert "usage" not in obj and "usage" not in obj["choices"][0]
    assert obj["choices"][0]["delta"] == orjson.loads(payload)["choices"][0]["delta"]
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert meter.usage is not None


def test_usage_in_content_chunks_is_passed_unchanged_when_the_client_asked() -> None:
    meter = StreamMeter(client_wants_usage=True)
    payload = chunk("", finish="stop", choice_usage={"prompt_tokens": 8, "completion_tokens": 12})
    assert meter.feed(payload) == payload
    assert meter.usage == Usage(8, 0, 12)


def test_null_usage_on_content_chunks_does_not_erase_an_earlier_report(counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=False)
    feed_all(meter, [chunk("a", usage={"prompt_tokens": 5, "completion_tokens": 1}), chunk("b", usage=None),
                     orjson.dumps({"choices": [{"index": 0, "delta": {"content": "c"}}], "usage": None})])
    assert meter.final_usage(0, counter) == Usage(5, 0, 1)


def test_without_any_usage_output_is_counted_locally_and_marked_estimated(counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=True)
    text = ["The quick brown fox", " jumps over", " the lazy dog."]
    out = feed_all(meter, [chunk(t) for t in text] + [chunk(finish="stop"), b"[DONE]"])
    assert len(out) == 5
    usage = meter.final_usage(42, counter)
    assert usage == Usage(42, 0, counter.count_text("".join(text)), source="estimated")
    assert usage.output_tokens > 0


def test_local_count_includes_reasoning_content_and_tool_calls(counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=False)
    tool_calls = [{"index": 0, "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]
    feed_all(meter, [
        orjson.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "thinking hard"}}]}),
        orjson.dumps({"choices": [{"index": 0, "delta": {"content": "ok"}}]}),
        orjson.dumps({"choices": [{"index": 0, "delta": {"tool_calls": tool_calls}}]}),
    ])
    assert meter.output_text() == "thinking hardok" + orjson.dumps(tool_calls).decode()
    assert meter.final_usage(1, counter).source == "estimated"


def test_done_and_unparseable_payloads_pass_through_untouched() -> None:
    meter = StreamMeter(client_wants_usage=False)
    broken = b'{"usage": {"prompt_tokens": 3'
    assert meter.feed(b"[DONE]") == b"[DONE]"
    assert meter.feed(broken) == broken
    assert meter.usage is None
    assert meter.chunks == 1  # [DONE] is not a chunk


def test_the_word_usage_inside_content_is_not_mistaken_for_a_usage_report(counter: TokenCounter) -> None:
    meter = StreamMeter(client_wants_usage=False)
    payload = chunk('see the "usage" field')
    assert meter.feed(payload) == payload
    assert meter.final_usage(7, counter).source == "estimated"


@pytest.mark.parametrize("null", [b'"usage":null', b'"usage": null'])
def test_chunks_repeating_null_usage_are_passed_on_unparsed_and_the_real_report_still_counts(
        null: bytes, counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    content = b'{"choices":[{"index":0,"delta":{"content":"Hi"}}],' + null + b"}"
    parsed: list[bytes] = []
    real_loads = orjson.loads
    monkeypatch.setattr("gateway.metering.orjson.loads", lambda b: parsed.append(b) or real_loads(b))
    meter = StreamMeter(client_wants_usage=False)
    final = chunk(choices=False, usage={"prompt_tokens": 5, "completion_tokens": 1})
    out = feed_all(meter, [content, content, final, b"[DONE]"])
    assert out == [content, content, b"[DONE]"]
    assert parsed == [final]  # only the chunk with a real report was parsed
    assert meter.final_usage(0, counter) == Usage(5, 0, 1)


def test_a_content_string_mentioning_usage_null_does_not_hide_a_real_report(counter: TokenCounter) -> None:
    tricky = orjson.dumps({"choices": [], "note": 'say "usage":null', "usage": {"prompt_tokens": 4,
                                                                                "completion_tokens": 2}})
    meter = StreamMeter(client_wants_usage=True)
    feed_all(meter, [tricky])
    assert meter.final_usage(0, counter) == Usage(4, 0, 2)


def test_relay_frames_a_batch_as_one_sse_text_and_drops_what_the_client_did_not_ask_for() -> None:
    meter = StreamMeter(client_wants_usage=False)
    stream = openai_stream()
    assert meter.relay(stream[:2]) == b"data: " + stream[0] + b"\n\ndata: " + stream[1] + b"\n\n"
    assert meter.relay([stream[2]]) == b""  # the usage-only chunk, not asked for
    assert meter.relay([b"[DONE]"]) == b"data: [DONE]\n\n"
