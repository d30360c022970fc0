"""Splitting a byte stream into SSE `data:` payloads.

Tolerant by design: `: keep-alive` comments, blank lines, `\r\n` endings, `event:`/`id:` fields and chunk
boundaries anywhere are all accepted. LLM vendors put one JSON document per `data:` line, so each data line is
one payload (no vendor splits JSON across lines), which lets a payload be relayed as soon as its line ends.

`SSESplitter` is the synchronous core (one `bytes.split` per network chunk, no per-byte Python work), so an
adapter gets one batch of payloads per network chunk (`iter_sse_batches`, what adapters hand the relay) without
per-event async work.
"""

from __future__ import annotations

from typing import AsyncIterator


class SSESplitter:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of every line completed by `chunk` (a line cut by the chunk's end waits for the next)."""
        if self._buf:
            chunk = self._buf + chunk
        lines = chunk.split(b"\n")
        self._buf = lines.pop()  # b"" when the chunk ended with a newline
        out = []
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload:
                    out.append(payload)
        return out

    def close(self) -> list[bytes]:
        """What a stream that ended without a final newline still held."""
        tail, self._buf = self._buf.strip(), b""
        if tail.startswith(b"data:") and tail[5:].strip():
            return [tail[5:].strip()]
        return []


async def iter_sse_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The payloads each network chunk completes, as one batch per chunk (chunks completing none yield nothing)."""
    splitter = SSESplitter()
    async for chunk in chunks:
        batch = splitter.feed(chunk)
        if batch:
            yield batch
    tail = splitter.close()
    if tail:
        yield tail


DONE = b"[DONE]"  # the payload that ends an OpenAI-style stream


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def frames(payloads: list[bytes]) -> bytes:
    """`frame` of each payload, concatenated (one join, no per-payload concatenation)."""
    return b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n" if payloads else b""
