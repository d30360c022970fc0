"""Steady client traffic through the real OpenAI SDK, recorded per request (for the outage tests and the soak)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import openai


@dataclass(frozen=True)
class Sent:
    t0: float
    t1: float
    ok: bool
    status: int  # 200, or the error's status (0: no answer at all)
    code: str | None
    request_id: str | None
    stream: bool


def send(client: openai.OpenAI, body: dict[str, Any], *, stream: bool = False) -> Sent:
    t0 = time.monotonic()
    try:
        if stream:
            s = client.chat.completions.create(**body, stream=True)
            rid = s.response.headers.get("x-gateway-request-id")
            chunks = list(s)
            ok = bool(chunks) and any(c.choices and c.choices[0].finish_reason for c in chunks)
            return Sent(t0, time.monotonic(), ok, 200, None if ok else "incomplete", rid, True)
        raw = client.chat.completions.with_raw_response.create(**body)
        raw.parse()
        return Sent(t0, time.monotonic(), True, raw.status_code, None, raw.headers.get("x-gateway-request-id"),
                    False)
    except openai.APIStatusError as e:
        code = None
        if isinstance(e.body, dict):
            code = e.body.get("code") or (e.body.get("error") or {}).get("code")
        return Sent(t0, time.monotonic(), False, e.status_code, code, e.response.headers.get("x-gateway-request-id"),
                    stream)
    except openai.APIError as e:
        return Sent(t0, time.monotonic(), False, 0, type(e).__name__, None, stream)


class Traffic:
    """`threads` clients, each sending `make(i)` -> (client, body, stream) in a loop until stopped."""

    def __init__(self, make: Callable[[int, int], tuple[openai.OpenAI, dict[str, Any], bool]], threads: int = 2,
                 pause_s: float = 0.02) -> None:
        self._make = make
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent: list[Sent] = []
        self._pause_s = pause_s
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, thread: int) -> None:
        i = 0
        while not self._stop.is_set():
            client, body, stream = self._make(thread, i)
            result = send(client, body, stream=stream)
            with self._lock:
                self.sent.append(result)
            i += 1
            time.sleep(self._pause_s)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def between(self, t0: float, t1: float) -> list[Sent]:
        """Requests sent within [t0, t1) (monotonic clock)."""
        with self._lock:
            return [s for s in self.sent if t0 <= s.t0 < t1]


def served_share(sent: list[Sent]) -> float:
    return sum(s.ok for s in sent) / len(sent) if sent else 0.0
