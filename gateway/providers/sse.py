"""Splitting a byte stream into SSE `data:` payloads.

Tolerant by design: `: keep-alive` comments, blank lines, `\r\n` endings, `event:`/`id:` fields and chunk
boundaries anywhere are all accepted. LLM vendors put one JSON document per `data:` line, so each data line is
one payload (no vendor splits JSON across lines), which lets a payload be relayed as soon as its line ends.
"""

from __future__ import annotations

from typing import AsyncIterator


async def iter_sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buf = b""
    async for chunk in chunks:
        buf = buf + chunk if buf else chunk
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload:
                    yield payload
        buf = buf[start:]
    tail = buf.strip()
    if tail.startswith(b"data:") and tail[5:].strip():
        yield tail[5:].strip()


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
