"""The one interface every provider adapter implements, and the failure it raises.

Adapters translate the outside world once, here at the edge: transport errors become `UpstreamFailure` with a
`kind` (timeout, connect, bad_response) or an HTTP status; nothing above this layer sees httpx or litellm types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol

from gateway.domain import Deployment


class UpstreamFailure(Exception):
    """An attempt failed. `message`/`code`/`param` are the vendor's, relayed only for the client's own faults."""

    def __init__(self, kind: str, *, status: int | None = None, message: str = "", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(f"{kind} {status or ''}".strip())
        self.kind = kind
        self.status = status
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class JSONResult:
    body: bytes  # the vendor's bytes, relayed unchanged
    obj: dict[str, Any]  # parsed, for usage


class EventStream(Protocol):
    """SSE `data:` payloads of an accepted (HTTP 200) stream, in order, `[DONE]` included when sent: one non-empty
    batch per network read, so the relay does its per-read work (a write to the client) once per read, not once
    per event."""

    def __aiter__(self) -> AsyncIterator[list[bytes]]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult: ...

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> EventStream: ...

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult: ...

    async def aclose(self) -> None: ...


class NativeProvider(Provider, Protocol):
    """A provider whose wire dialect is also a client dialect (gateway/dialects): it can take the client's own body
    and hand back the vendor's own bytes (pass-through), besides the canonical chat calls."""

    async def complete_native(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult: ...

    async def stream_native(self, deployment: Deployment, body: dict[str, Any]) -> EventStream: ...
