"""The parse's one walk over a chat request (gateway/segments.py): its token count is `count_messages`' to the
token, memo warm or cold; its digests are content-derived (the same in another process with another hash seed);
its memo is bounded; and the prefix built from it hashes what it was handed, marks included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from gateway.cache.prefix import PrefixHasher
from gateway.segments import SHIFT, CacheMarks, SegmentMeter
from gateway.tokens import TokenCounter

COUNTER = TokenCounter()
CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "order 7"}'}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Looks an order up.",
                                            "parameters": {"type": "object", "properties": {}}}}]
MARKED_PART = {"type": "text", "text": "the long document. " * 30, "cache_control": {"type": "ephemeral"}}

# (name, messages, tools): every shape count_messages knows.
SHAPES: list[tuple[str, list[Any], Any]] = [
    ("plain", [{"role": "system", "content": "Be brief. " * 40}, {"role": "user", "content": "hi"}], None),
    ("named and CJK", [{"role": "user", "name": "ann", "content": "大模型价格战开始了。" * 5}], None),
    ("tool call and result", [{"role": "user", "content": "where is order 7?"},
                              {"role": "assistant", "content": None, "tool_calls": [CALL]},
                              {"role": "tool", "tool_call_id": "c1", "content": "shipped"}], TOOLS),
    ("tool call without content", [{"role": "assistant", "tool_calls": [CALL]},
                                   {"role": "user", "content": "and?"}], None),
    ("parts and images", [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
        {"role": "user", "content": [MARKED_PART]}], None),
    ("empty content", [{"role": "assistant", "content": ""}, {"role": "user", "content": "go on"}], None),
    ("unhashable role", [{"role": ["user"], "content": "odd"}, {"role": "user", "content": "fine"}], None),
    ("not an object", ["stray text", {"role": "user", "content": "fine"}], None),
]


@pytest.mark.parametrize("messages,tools", [(m, t) for _, m, t in SHAPES], ids=[s[0] for s in SHAPES])
def test_the_measured_total_is_count_messages_exactly_memo_cold_and_warm(messages: list[Any], tools: Any) -> None:
    meter = SegmentMeter(TokenCounter())
    expected = COUNTER.count_messages(messages, tools)
    cold, warm = meter.measure(messages, tools), meter.measure(messages, tools)
    assert cold.total == warm.total == expected
    assert cold.values == warm.values and len(cold.values) == len(messages)
    # The per-message tokens are the per-message counts (the prefix's cumulative tokens rest on them).
    per_message = [COUNTER.count_messages([m]) - 3 for m in messages]
    assert [v >> SHIFT for v in cold.values] == per_message


def test_marked_parts_and_dialect_marks_are_reported_by_message_index() -> None:
    messages = SHAPES[4][1]
    assert COUNTER.measure(messages).marks == (1,)
    assert COUNTER.measure(messages, TOOLS, CacheMarks((0,), True)).marks == (0, 1)
    assert COUNTER.measure(messages, TOOLS, CacheMarks((0,), True)).tools_marked


def test_digests_are_content_derived_not_pythons_hash() -> None:
    """Another process with another hash seed (another replica) computes the same prefix hashes."""
    body = {"messages": SHAPES[2][1], "tools": TOOLS}
    script = ("import json, sys; from gateway.cache.prefix import PrefixHasher; from gateway.tokens import "
              "TokenCounter; p = PrefixHasher(TokenCounter()).prefix(json.loads(sys.argv[1])); "
              "print(json.dumps([h % 2**64 for h in p.hashes]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(body)], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    here = [h % 2**64 for h in PrefixHasher(COUNTER).prefix(body).hashes]
    assert json.loads(out.stdout) == here and len(set(here)) == len(here)


def test_the_memo_is_bounded_by_entries_and_by_characters() -> None:
    meter = SegmentMeter(TokenCounter(), max_entries=3, max_chars=1000)
    for i in range(10):
        meter.measure([{"role": "user", "content": f"message {i} " * 5}])
    assert len(meter._plain.values) == 3
    meter.measure([{"role": "user", "content": "x" * 900}, {"role": "user", "content": "y" * 200}])
    assert sum(len(k[1]) for k in meter._plain.values) <= 1000
    huge = [{"role": "user", "content": "z" * 70_000}]  # measured every time, never held
    assert meter.measure(huge).total == COUNTER.count_messages(huge)
    assert all(len(k[1]) < 70_000 for k in meter._plain.values)


def test_the_prefix_from_handed_segments_equals_the_prefix_measured_by_the_hasher() -> None:
    body = {"messages": [{"role": "system", "content": "S. " * 50}, *SHAPES[2][1]], "tools": TOOLS}
    handed = PrefixHasher(COUNTER).prefix(body, COUNTER.measure(body["messages"], TOOLS))
    own = PrefixHasher(TokenCounter()).prefix(body)
    assert list(handed.hashes) == list(own.hashes) and list(handed.tokens) == list(own.tokens)
    assert handed.tokens[-1] + 3 == COUNTER.count_messages(body["messages"], TOOLS)
    assert handed.anchor == 1 and len(handed) == len(body["messages"]) + 1


@pytest.mark.parametrize("marks,tools,expected", [
    (CacheMarks((0,)), None, (0,)),  # the system prompt's own boundary
    (CacheMarks((0,)), TOOLS, (1,)),  # with tools: an Anthropic request puts them first, the mark covers them
    (CacheMarks((), True), TOOLS, (1,)),  # the tools' boundary
    (CacheMarks((2,)), TOOLS, (3,)),  # a later message: shifted past the tools segment
])
def test_marks_fall_on_canonical_boundaries(marks: CacheMarks, tools: Any, expected: tuple[int, ...]) -> None:
    body: dict[str, Any] = {"messages": [{"role": "system", "content": "S. " * 50}, {"role": "user", "content": "a"},
                                         {"role": "assistant", "content": "b"}]}
    if tools:
        body["tools"] = tools
    p = PrefixHasher(COUNTER).prefix(body, COUNTER.measure(body["messages"], tools, marks))
    assert p.marks == expected


def test_order_matters_and_a_prefix_keeps_its_hashes_when_the_conversation_grows() -> None:
    a, b = {"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}
    h = PrefixHasher(COUNTER)
    ab, ba = h.prefix({"messages": [a, b]}), h.prefix({"messages": [b, a]})
    assert ab.hashes[-1] != ba.hashes[-1] and ab.hashes[-1] % 2**64 != ba.hashes[-1] % 2**64
    longer = h.prefix({"messages": [a, b, a, b]})
    assert list(longer.hashes[:2]) == list(ab.hashes) and list(longer.tokens[:2]) == list(ab.tokens)
