"""A simulated vendor's switchboard (which failure to act out, for how many requests) and its request counters.

Both are touched from the vendor's event loop and, through `VendorCluster.control()` / `.stats()`, from test
threads, so each guards its few fields with a lock that is never held across an await.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

MODES: tuple[str, ...] = (
    "ok",  # answer normally
    "error_500",  # vendor-format 500
    "error_429",  # vendor-format 429 rate limit, with Retry-After
    "error_401",  # the operator's account is refused (401/402/403, per vendor), body names the account
    "error_400",  # vendor-format 400 bad request
    "error_529",  # overloaded: 529 overloaded_error on the Anthropic endpoint, 503 on the OpenAI-format ones
    "timeout",  # hang for delay_s (default: until the server stops), then 504
    "slow",  # wait delay_s before the first byte, then answer normally
    "slow_stream",  # streams start at once, then wait delay_s before each content chunk (client disconnects, TTFT)
    "drop_mid_stream",  # send part of the response, then close the connection
    "error_mid_stream",  # streams: part of the answer, then the vendor's error event, and the stream ends
    "no_usage",  # answer without any usage report
)


class DroppedConnection(Exception):
    """Raised on purpose to make the server close a connection mid-response (`drop_mid_stream`)."""


@dataclass(frozen=True)
class Setting:
    mode: str = "ok"
    delay_s: float = 0.0
    remaining: int | None = None  # requests still to affect; None = until changed


class VendorControl:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._setting = Setting()

    def set(self, mode: str, delay_s: float = 0.0, count: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        if count is not None and count < 1:
            raise ValueError("count must be a positive integer or null")
        with self._lock:
            self._setting = Setting(mode, float(delay_s), count)

    def take(self) -> tuple[str, float]:
        """The mode this request acts out; spends one of `count` when the mode is not `ok`."""
        with self._lock:
            s = self._setting
            if s.mode != "ok" and s.remaining is not None:
                self._setting = Setting() if s.remaining <= 1 else Setting(s.mode, s.delay_s, s.remaining - 1)
            return s.mode, s.delay_s

    def snapshot(self) -> dict[str, Any]:
        s = self._setting
        return {"mode": s.mode, "delay_s": s.delay_s, "count": s.remaining}

    @staticmethod
    def parse(body: Any) -> tuple[str, float, int | None]:
        """Validate a `POST /_control` body; ValueError names what is wrong."""
        if not isinstance(body, Mapping):
            raise ValueError("expected a JSON object {mode, delay_s?, count?}")
        mode = body.get("mode", "ok")
        delay = body.get("delay_s", 0) or 0
        count = body.get("count")
        if not isinstance(mode, str):
            raise ValueError("mode must be a string")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise ValueError("delay_s must be a number")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise ValueError("count must be an integer or null")
        return mode, float(delay), count


class VendorStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._streams = 0
            self._by_model: Counter[str] = Counter()
            self._by_endpoint: Counter[str] = Counter()
            self._last_body: Any = None
            self._last_headers: dict[str, str] = {}

    def record(self, endpoint: str, body: Any, headers: Mapping[str, str]) -> None:
        model = body.get("model") if isinstance(body, dict) else None
        with self._lock:
            self._requests += 1
            self._by_endpoint[endpoint] += 1
            self._by_model[model if isinstance(model, str) else "(none)"] += 1
            if isinstance(body, dict) and body.get("stream") is True:
                self._streams += 1
            # Kept whole so tests can check what the gateway forwarded (and that no client credential leaked).
            self._last_body = body
            self._last_headers = dict(headers)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "streams": self._streams,
                "by_model": dict(self._by_model),
                "by_endpoint": dict(self._by_endpoint),
                "last_body": copy.deepcopy(self._last_body),
                "last_headers": dict(self._last_headers),
            }
