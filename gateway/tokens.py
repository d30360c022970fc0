"""Estimating prompt tokens (for routing and budgets) and counting output when a vendor sends no usage.

Rule (documented in the README): text is counted with tiktoken's `cl100k_base`; every CJK character counts at
least one token (cl100k already spends 1-2 tokens on most CJK characters, while the Chinese vendors' tokenizers
spend 0.6-1), plus 4 tokens of framing per message and 3 for the reply primer, as OpenAI documents. For the
seed vendors the estimate is therefore at or above the vendor's own count, which is the safe side for both
context-window checks and budget reservations. Images count 765 tokens each (a high-detail 512px tile set).

The encoder is loaded once, at start-up; tiktoken's BPE file comes from the copy bundled with the installed
litellm package (found without importing litellm), because this machine has no network.

Counts of texts are remembered (a bounded LRU keyed by the text): chat clients resend the system prompt and the
whole conversation on every turn, so most message contents of a request were counted on an earlier one. The parse
counts a chat request with `measure` (gateway/segments.py): the same count, in one walk that also keeps per
message what the prefix cache hashes.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from typing import Any, Iterable, Sequence

import orjson

from gateway.segments import CacheMarks, SegmentMeter, Segments

_IMAGE_TOKENS = 765
_PER_MESSAGE = 4
_REPLY_PRIMER = 3
_CJK = re.compile("[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CACHE_MAX_ENTRIES = 4096
_CACHE_MAX_CHARS = 4_000_000  # ~16 MB of text at most, whatever the mix of sizes
_CACHE_MAX_TEXT = 64_000  # longer texts are counted every time (rare, and they would crowd the cache out)


def _point_tiktoken_at_bundled_cache() -> None:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    spec = importlib.util.find_spec("litellm")
    if spec and spec.submodule_search_locations:
        cache = os.path.join(list(spec.submodule_search_locations)[0], "litellm_core_utils", "tokenizers")
        if os.path.isdir(cache):
            os.environ["TIKTOKEN_CACHE_DIR"] = cache


class TokenCounter:
    def __init__(self) -> None:
        _point_tiktoken_at_bundled_cache()
        try:
            import tiktoken

            self._enc: Any = tiktoken.get_encoding("cl100k_base")
        except Exception:  # no BPE file reachable: fall back to a character rule (~4 chars per token)
            self._enc = None
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cached_chars = 0
        self._segments = SegmentMeter(self)

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        cache = self._cache
        n = cache.get(text)
        if n is not None:
            cache.move_to_end(text)
            return n
        n = self._count(text)
        size = len(text)
        if size <= _CACHE_MAX_TEXT:
            cache[text] = n
            self._cached_chars += size
            while len(cache) > _CACHE_MAX_ENTRIES or self._cached_chars > _CACHE_MAX_CHARS:
                old, _ = cache.popitem(last=False)
                self._cached_chars -= len(old)
        return n

    def _count(self, text: str) -> int:
        if self._enc is None:
            return max(1, (len(text.encode("utf-8")) + 3) // 4)
        n = len(self._enc.encode_ordinary(text))
        if not text.isascii():
            n = max(n, len(_CJK.findall(text)))
        return n

    def _content_tokens(self, content: Any) -> int:
        if isinstance(content, str):
            return self.count_text(content)
        if isinstance(content, list):
            total = 0
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") in ("image_url", "input_image", "image"):
                        total += _IMAGE_TOKENS
                    elif isinstance(part.get("text"), str):
                        total += self.count_text(part["text"])
            return total
        return 0

    def count_messages(self, messages: Iterable[Any], tools: Any = None) -> int:
        total = _REPLY_PRIMER
        for m in messages:
            if not isinstance(m, dict):
                continue
            total += _PER_MESSAGE + self._content_tokens(m.get("content"))
            if m.get("tool_calls"):
                total += self.count_text(orjson.dumps(m["tool_calls"]).decode())
            if isinstance(m.get("name"), str):
                total += 1
        if tools:
            total += self.count_text(orjson.dumps(tools).decode())
        return total

    def measure(self, messages: Sequence[Any], tools: Any = None, marks: CacheMarks | None = None) -> Segments:
        """`count_messages` (`.total`) of a chat request, keeping per message what the prefix cache hashes: the
        request path walks a conversation once for both."""
        return self._segments.measure(messages, tools, marks)

    def count_embedding_input(self, value: Any) -> int:
        if isinstance(value, str):
            return self.count_text(value)
        if isinstance(value, list):
            if all(isinstance(v, int) for v in value):
                return len(value)  # already token ids
            return sum(self.count_embedding_input(v) for v in value)
        return 0
