"""How each simulated vendor streams: where usage goes, keep-alives, and the stream-shaped control modes."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest


@pytest.mark.parametrize("provider", ["volcengine", "dashscope", "qianfan", "deepseek"])
def test_include_usage_adds_a_final_usage_only_chunk_and_null_usage_elsewhere(v, provider):
    events, _ = v.stream_events(provider, include_usage=True)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 32
    assert all(e["usage"] is None for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert len(events) >= 5  # role, several content chunks, finish, usage


@pytest.mark.parametrize("provider", ["volcengine", "dashscope", "qianfan", "deepseek"])
def test_without_include_usage_these_vendors_stream_no_usage(v, provider):
    for include_usage in (None, False):
        events, _ = v.stream_events(provider, include_usage=include_usage)
        assert all("usage" not in e for e in events)
        assert all(e["choices"] for e in events)


def test_zhipu_puts_usage_on_the_finish_chunk_whether_asked_or_not(v):
    for include_usage in (None, True):
        events, _ = v.stream_events("zhipu", include_usage=include_usage)
        assert events[-1]["choices"][0]["finish_reason"] == "stop"
        assert events[-1]["usage"]["completion_tokens"] == 32
        assert all("usage" not in e for e in events[:-1])


def test_hunyuan_sends_cumulative_usage_on_every_chunk(v):
    events, _ = v.stream_events("hunyuan", include_usage=True)
    completions = [e["usage"]["completion_tokens"] for e in events]
    assert completions == sorted(completions)
    assert completions[0] == 0 and completions[-1] == 32
    assert len(set(completions)) > 2
    assert all(e["choices"] for e in events)


def test_moonshot_puts_usage_inside_the_last_choice(v):
    events, _ = v.stream_events("moonshot", include_usage=True)
    last = events[-1]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last["usage"]["prompt_tokens"] > 0 and last["usage"]["completion_tokens"] == 32
    assert all("usage" not in e for e in events)


def test_streamed_content_equals_the_non_streamed_reply(v):
    events, _ = v.stream_events("qianfan", max_tokens=20)
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert streamed == v.chat("qianfan", "hi", max_tokens=20).json()["choices"][0]["message"]["content"]


def test_deepseek_interleaves_keep_alive_comments_and_blank_lines(v):
    _, lines = v.stream_events("deepseek", include_usage=True)
    assert lines[0] == ": keep-alive"
    assert lines.count(": keep-alive") >= 2
    assert any(a == "" and b == "" for a, b in zip(lines, lines[1:]))  # an extra blank line between events
    _, plain = v.stream_events("dashscope", include_usage=True)
    assert not any(line.startswith(":") for line in plain)


def test_slow_stream_sends_the_first_chunk_at_once_and_spaces_out_the_rest(v, client, cluster):
    cluster.control("zhipu", "slow_stream", delay_s=0.05, count=1)
    body = {"model": "glm-3-turbo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.monotonic()
    with client.stream("POST", f"{cluster.urls['zhipu']}/chat/completions", json=body, headers=v.auth("zhipu")) as r:
        lines = r.iter_lines()
        assert '"role":"assistant"' in next(lines)
        first_chunk_s = time.monotonic() - started
        assert "data: [DONE]" in list(lines)
    assert first_chunk_s < 0.05
    assert time.monotonic() - started >= 8 * 0.05  # 32 tokens in 8 content chunks


def test_drop_mid_stream_closes_the_connection_after_the_first_chunks(v, client, cluster):
    cluster.control("deepseek", "drop_mid_stream", count=1)
    received: list[str] = []
    body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", f"{cluster.urls['deepseek']}/chat/completions", json=body,
                           headers=v.auth("deepseek")) as r:
            received.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert received and '"role":"assistant"' in received[0]
    assert "data: [DONE]" not in received


def test_no_usage_mode_omits_usage_everywhere(v, cluster):
    cluster.control("dashscope", "no_usage")
    assert "usage" not in v.chat("dashscope").json()
    events, _ = v.stream_events("dashscope", include_usage=True)
    assert all("usage" not in e for e in events)
    cluster.control("hunyuan", "no_usage")
    events, _ = v.stream_events("hunyuan", include_usage=True)
    assert all("usage" not in e for e in events)



def test_error_mid_stream_sends_part_of_the_answer_then_an_error_payload_and_no_done(v, client, cluster):
    cluster.control("dashscope", "error_mid_stream", count=1)
    body = {"model": "qwen-long", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", f"{cluster.urls['dashscope']}/chat/completions", json=body,
                       headers=v.auth("dashscope")) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert '"role":"assistant"' in data[0] and '"content"' in data[1]
    assert "error" in orjson.loads(data[-1]) and "[DONE]" not in data
