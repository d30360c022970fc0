"""Deterministic stand-ins for a model: token counts, replies, embedding vectors and a prompt prefix cache.

The simulated vendors count tokens by their own simple rule (a run of ASCII characters is one token per 4
characters, every other character is one token), not with tiktoken: real vendors' counts differ from the
gateway's estimate too, and the gateway must bill the vendor's figure.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

DEFAULT_OUTPUT_TOKENS = 32  # a reply's length when the request sets no max_tokens
NATURAL_OUTPUT_TOKENS = 64  # the longest reply the simulated model "wants" to give (finish_reason stop)
IMAGE_PART_TOKENS = 85
EMBEDDING_DIMENSIONS = 8


def token_pieces(text: str) -> list[str]:
    """Split text into tokens: ASCII runs in slices of 4 characters, any other character alone."""
    pieces: list[str] = []
    run_start = 0
    for i, ch in enumerate(text):
        if ord(ch) >= 128:
            pieces.extend(text[j : min(j + 4, i)] for j in range(run_start, i, 4))
            pieces.append(ch)
            run_start = i + 1
    pieces.extend(text[j : min(j + 4, len(text))] for j in range(run_start, len(text), 4))
    return pieces


def count_tokens(text: str) -> int:
    return len(token_pieces(text))


def content_text(content: Any) -> tuple[str, int]:
    """A message's text and the extra tokens of its non-text parts (images)."""
    if isinstance(content, str):
        return content, 0
    if isinstance(content, list):
        texts, extra = [], 0
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                extra += IMAGE_PART_TOKENS
        return "".join(texts), extra
    return "", 0


def prompt_pieces(messages: list[dict[str, Any]]) -> tuple[list[str], int]:
    """The prompt as the model sees it (role markers included, as chat templates add them) and extra tokens."""
    pieces: list[str] = []
    extra = 0
    for msg in messages:
        text, part_tokens = content_text(msg.get("content"))
        pieces.extend(token_pieces(f"<|{msg.get('role', 'user')}|>{text}"))
        extra += part_tokens
    pieces.append("<|assistant|>")
    return pieces, extra


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return content_text(msg.get("content"))[0]
    return ""


def output_tokens(max_tokens: int | None) -> tuple[int, str]:
    """How many tokens the reply has, and its finish_reason."""
    if max_tokens is None:
        return min(DEFAULT_OUTPUT_TOKENS, NATURAL_OUTPUT_TOKENS), "stop"
    if max_tokens < NATURAL_OUTPUT_TOKENS:
        return max_tokens, "length"
    return NATURAL_OUTPUT_TOKENS, "stop"


def reply_pieces(model: str, user_text: str, n: int) -> list[str]:
    """`n` tokens of "[model] reply to: <first 40 chars>", repeated as needed."""
    base = token_pieces(f"[{model}] reply to: {user_text[:40]} ")
    return [base[i % len(base)] for i in range(n)]


def embedding_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    # Eight unsigned 32-bit words scaled into [-1, 1): same text, same vector, on every run.
    words = struct.unpack(">8I", digest[: 4 * EMBEDDING_DIMENSIONS])
    return [round(w / 2**31 - 1.0, 6) for w in words]


class PrefixCache:
    """A vendor's prompt cache: a prompt's leading whole blocks that an earlier prompt shared are cache hits."""

    def __init__(self, block_tokens: int, max_entries: int = 100_000) -> None:
        self._block = block_tokens
        self._max = max_entries
        self._seen: set[bytes] = set()

    def lookup_and_store(self, pieces: list[str], namespace: str = "") -> int:
        """Cached tokens for this prompt (a multiple of the block size); remembers its blocks for later ones.

        `namespace` keeps models apart: a vendor caches per model, never across them.
        """
        hasher = hashlib.sha256(namespace.encode("utf-8") + b"\x01")
        cached = 0
        still_hitting = True
        boundaries: list[bytes] = []
        for i, piece in enumerate(pieces, start=1):
            hasher.update(piece.encode("utf-8") + b"\x00")
            if i % self._block == 0:
                key = hasher.copy().digest()
                if still_hitting and key in self._seen:
                    cached = i
                else:
                    still_hitting = False
                boundaries.append(key)
        if len(self._seen) + len(boundaries) > self._max:
            self._seen.clear()  # a bounded demo: forgetting everything is a legitimate cache eviction
        self._seen.update(boundaries)
        return cached

    def clear(self) -> None:
        self._seen.clear()
