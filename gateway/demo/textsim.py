"""Deterministic stand-ins for a model: token counts, the prompt as a token list, replies, embedding vectors.

The simulated vendors count tokens by their own simple rule (a run of ASCII characters is one token per 4
characters, every other character is one token), not with tiktoken: real vendors' counts differ from the
gateway's estimate too, and the gateway must bill the vendor's figure.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import orjson

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


def prompt_pieces(messages: list[dict[str, Any]], tools: Any = None,
                  response_format: Any = None) -> tuple[list[str], int]:
    """The prompt as the model sees it and the extra tokens of its images.

    As chat templates render it: the tool definitions and a requested JSON schema first (they are part of the
    prompt, and of its cacheable prefix), then each message with its role marker, an assistant's tool calls
    and a tool result's call id included, then the marker where the reply starts.
    """
    pieces: list[str] = []
    if tools:
        pieces.extend(token_pieces("<|tools|>" + orjson.dumps(tools).decode()))
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        pieces.extend(token_pieces("<|format|>" + orjson.dumps(response_format).decode()))
    extra = 0
    for msg in messages:
        text, part_tokens = content_text(msg.get("content"))
        pieces.extend(token_pieces(f"<|{msg.get('role', 'user')}|>{text}"))
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                pieces.extend(token_pieces(f"<|call|>{fn.get('name', '')}{fn.get('arguments', '')}"))
        if msg.get("tool_call_id"):
            pieces.extend(token_pieces(f"<|id|>{msg['tool_call_id']}"))
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
