"""The prompt-token estimate: tiktoken for English, at least one token per CJK character, images, framing."""

from __future__ import annotations

import pytest
import tiktoken

from gateway.tokens import TokenCounter


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture(scope="module")
def cl100k(counter: TokenCounter) -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base")  # TokenCounter() pointed tiktoken at its bundled BPE file


ENGLISH = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Summarise the following quarterly report in three bullet points, keeping every figure exact: revenue rose "
    "12.5% to $4.2bn while operating costs fell.",
    "def add(a, b):\n    return a + b\n",
]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_text_is_counted_like_tiktoken(counter: TokenCounter, cl100k: tiktoken.Encoding, text: str) -> None:
    reference = len(cl100k.encode(text))
    assert abs(counter.count_text(text) - reference) <= max(1, reference // 20)


def test_the_real_encoder_is_loaded_not_the_character_fallback(counter: TokenCounter) -> None:
    # 100 repetitions of a common word are ~100 tokens with cl100k; the 4-bytes rule would give 125
    assert counter.count_text("hello " * 100) <= 101


@pytest.mark.parametrize(
    "text",
    ["你好", "请用三句话总结这份季度报告", "大模型价格战：字节跳动豆包每千tokens只要0.0008元", "こんにちは世界", "안녕하세요",
     "中" * 500],
)
def test_cjk_text_counts_at_least_one_token_per_cjk_character(counter: TokenCounter, text: str) -> None:
    cjk = sum(1 for ch in text if ("\u3000" <= ch <= "\u9fff") or ("\uac00" <= ch <= "\ud7af"))
    assert counter.count_text(text) >= cjk
    assert counter.count_text(text) >= len(tiktoken.get_encoding("cl100k_base").encode(text))


def test_estimate_is_monotonic_in_text_length(counter: TokenCounter) -> None:
    for base in ("The quick brown fox jumps over the lazy dog. ", "大模型价格战开始了。", "mixed 中文 and English. "):
        counts = [counter.count_text(base * n) for n in range(0, 40)]
        assert counts == sorted(counts), base
        assert counts[0] == 0 and counts[-1] > counts[1]


def test_empty_text_is_zero_tokens(counter: TokenCounter) -> None:
    assert counter.count_text("") == 0


def test_messages_add_framing_per_message_and_a_reply_primer(counter: TokenCounter) -> None:
    one = [{"role": "user", "content": "Hello"}]
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert counter.count_messages([]) == 3
    assert counter.count_messages(one) == 3 + 4 + counter.count_text("Hello")
    assert counter.count_messages(two) == 3 + 8 + counter.count_text("Be brief.") + counter.count_text("Hello")


@pytest.mark.parametrize("part_type", ["image_url", "input_image", "image"])
def test_each_image_part_adds_tokens(counter: TokenCounter, part_type: str) -> None:
    text_only = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}]}]
    one_image = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                              {"type": part_type, part_type: {"url": "data:image/png;base64,AA"}}]}]
    two_images = [{"role": "user", "content": one_image[0]["content"] + one_image[0]["content"][1:]}]  # type: ignore
    base, one, two = (counter.count_messages(m) for m in (text_only, one_image, two_images))
    assert one - base == 765
    assert two - one == 765


def test_tools_tool_calls_and_names_add_tokens(counter: TokenCounter) -> None:
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert counter.count_messages(msgs, tools) > counter.count_messages(msgs)
    named = [{"role": "user", "content": "Weather in Paris?", "name": "alice"}]
    assert counter.count_messages(named) == counter.count_messages(msgs) + 1
    call = [{"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]
    assert counter.count_messages(call) > counter.count_messages([{"role": "assistant", "content": None}])


@pytest.mark.parametrize(
    ("value", "expected_fn"),
    [
        ("hello world", lambda c: c.count_text("hello world")),
        (["hello", "world"], lambda c: c.count_text("hello") + c.count_text("world")),
        ([101, 102, 103], lambda c: 3),  # already token ids
        ([[1, 2], [3]], lambda c: 3),
        (None, lambda c: 0),
    ],
)
def test_embedding_input_is_counted(counter: TokenCounter, value: object, expected_fn) -> None:  # type: ignore
    assert counter.count_embedding_input(value) == expected_fn(counter)
