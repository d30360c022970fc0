"""The simulated model's deterministic rules: token counting, reply length, embeddings, the prefix cache."""

from __future__ import annotations

from gateway.demo import textsim


def test_ascii_counts_one_token_per_four_characters_and_cjk_one_per_character():
    assert textsim.count_tokens("") == 0
    assert textsim.count_tokens("abcd") == 1
    assert textsim.count_tokens("abcde") == 2
    assert textsim.count_tokens("价格战") == 3
    assert textsim.count_tokens("ab价格cd") == 4
    assert "".join(textsim.token_pieces("hello 你好 world")) == "hello 你好 world"


def test_output_length_is_capped_by_max_tokens_and_by_the_natural_length():
    assert textsim.output_tokens(None) == (32, "stop")
    assert textsim.output_tokens(5) == (5, "length")
    assert textsim.output_tokens(1000) == (textsim.NATURAL_OUTPUT_TOKENS, "stop")


def test_reply_has_exactly_the_requested_number_of_tokens():
    pieces = textsim.reply_pieces("m", "question", 50)
    assert len(pieces) == 50
    assert "".join(pieces).startswith("[m] reply to: question")


def test_embedding_vectors_are_stable_and_differ_by_text():
    assert textsim.embedding_vector("a") == textsim.embedding_vector("a")
    assert textsim.embedding_vector("a") != textsim.embedding_vector("b")
    assert all(-1 <= x < 1 for x in textsim.embedding_vector("a"))
