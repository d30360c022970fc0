"""The SSE parser: one payload per `data:` line, whatever the framing, comments and chunk boundaries."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from gateway.providers.sse import frame, iter_sse_batches


async def collect(chunks: list[bytes]) -> list[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    return [p async for batch in iter_sse_batches(gen()) for p in batch]


A = b'{"choices":[{"delta":{"content":"Hello"}}]}'
B = b'{"choices":[{"delta":{"content":" world\\u4f60\xe5\xa5\xbd"}}],"usage":null}'
STREAM = b"data: " + A + b"\n\ndata: " + B + b"\n\ndata: [DONE]\n\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (STREAM, [A, B, b"[DONE]"]),
        (STREAM.replace(b"\n", b"\r\n"), [A, B, b"[DONE]"]),
        (b": keep-alive\n\n" + STREAM + b": keep-alive\n\n", [A, B, b"[DONE]"]),
        (b"\n\n\n" + STREAM.replace(b"\n\n", b"\n\n\n\n"), [A, B, b"[DONE]"]),
        (b"data:" + A + b"\n", [A]),  # no space after the colon
        (b"data:   " + A + b"   \n", [A]),
        (b"event: message\nid: 7\nretry: 1000\ndata: " + A + b"\n\n", [A]),
        (b"data:\n\ndata: \n\ndata: " + A + b"\n\n", [A]),  # empty data lines carry nothing
        (b"data: " + A + b"\ndata: " + B + b"\n", [A, B]),  # one payload per data line
        (b"data: " + A + b"\n\ndata: [DONE]", [A, b"[DONE]"]),  # final line without newline
        (b"data: " + A + b"\r\n\r\ndata: [DONE]\r", [A, b"[DONE]"]),
        (b": keep-alive", []),
        (b"", []),
        (b"\n\n\r\n", []),
        (b'{"not": "sse"}\n', []),
    ],
    ids=["lf", "crlf", "keep-alive", "blank-lines", "no-space", "padding", "other-fields", "empty-data",
         "consecutive-data", "final-no-newline", "final-cr", "only-comment", "empty", "only-blank", "not-sse"],
)
async def test_sse_payloads_are_extracted(raw: bytes, expected: list[bytes]) -> None:
    assert await collect([raw]) == expected


@pytest.mark.parametrize("raw", [STREAM, STREAM.replace(b"\n", b"\r\n"), b": ping\r\n\r\n" + STREAM[:-2]])
async def test_payloads_split_across_two_chunks_at_every_offset(raw: bytes) -> None:
    expected = await collect([raw])
    assert expected == [A, B, b"[DONE]"]
    for cut in range(len(raw) + 1):
        assert await collect([raw[:cut], raw[cut:]]) == expected, f"split at {cut}"


async def test_payloads_delivered_one_byte_at_a_time() -> None:
    raw = b": keep-alive\r\n\r\n" + STREAM.replace(b"\n", b"\r\n")
    assert await collect([raw[i:i + 1] for i in range(len(raw))]) == [A, B, b"[DONE]"]


async def test_each_payload_is_yielded_as_soon_as_its_line_ends() -> None:
    seen: list[bytes] = []

    async def gen() -> AsyncIterator[bytes]:
        yield b"data: " + A + b"\n"
        assert seen == [A], "first payload should be yielded before the next chunk is read"
        yield b"data: [DONE]\n"

    async for batch in iter_sse_batches(gen()):
        seen.extend(batch)
    assert seen == [A, b"[DONE]"]


def test_frame_is_a_data_line_and_a_blank_line() -> None:
    assert frame(A) == b"data: " + A + b"\n\n"


async def test_framed_payloads_round_trip() -> None:
    payloads = [A, B, b"[DONE]"]
    assert await collect([b"".join(frame(p) for p in payloads)]) == payloads


async def test_batches_are_the_payloads_each_network_chunk_completes() -> None:
    async def gen() -> AsyncIterator[bytes]:
        for c in (b"data: " + A + b"\n\ndata: " + B[:5], B[5:] + b"\n\n", b": keep-alive\n\n", b"data: [DONE]"):
            yield c

    assert [b async for b in iter_sse_batches(gen())] == [[A], [B], [b"[DONE]"]]
