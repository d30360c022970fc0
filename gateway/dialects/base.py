"""What the pipeline needs of a client dialect (the API a request came in on) and of its streams.

The gateway's canonical request is the OpenAI chat-completions body, its canonical answer a chat completion and
its canonical stream chat-completion chunks. A `ClientDialect` translates at the edge: the client's request into
the canonical one (`parse`), the canonical answer back into the client's shape (`render`, `client_stream`), and
errors into the client's error shape. `pipeline.py` never learns a dialect.

Pass-through: a dialect whose wire format is also a vendor `api_style` (Anthropic Messages) sets `native_style`;
when a request reaches a deployment of that style, the pipeline sends `ParsedRequest.native` (the client's own
body) through the provider's `complete_native` / `stream_native`, relays the vendor's bytes unchanged, and reads
usage with `native_usage` / meters the stream with `native_stream`.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from starlette.responses import Response

from gateway.domain import Deployment, Mode, Usage
from gateway.errors import BadRequest
from gateway.http.parse import ParsedRequest
from gateway.metering import StreamMeter
from gateway.providers.base import JSONResult
from gateway.tokens import TokenCounter


class ClientStream(Protocol):
    """Turns the vendor's stream (batches of SSE `data:` payloads) into the client's bytes, metering as it goes."""

    def relay(self, batch: list[bytes]) -> bytes:
        """One batch of vendor payloads -> the bytes to send the client for it (b"" for nothing)."""
        ...

    def ended(self, batch: list[bytes]) -> bool:
        """This batch (just relayed) completed the client's answer: the body ends with it."""
        ...

    def finish(self) -> bytes:
        """The tail of a vendor stream that ended cleanly without its end marker (b"" when none is needed)."""
        ...

    def fail(self, message: str, kind: str) -> bytes:
        """The tail that ends a stream whose vendor failed after the first byte (the client's error event)."""
        ...

    def final_usage(self, prompt_estimate: int, counter: TokenCounter) -> Usage:
        """The vendor's last usage report, else a local count marked `estimated`."""
        ...


class StreamEncoder(Protocol):
    """Canonical chat-chunk payloads -> a client dialect's SSE bytes. Used through `EncodedStream`, which meters
    the chunks first (usage included: the encoder needs it for its terminal event)."""

    done: bool  # the client's answer is complete (its terminal event went out)

    def encode(self, payloads: list[bytes]) -> bytes:
        """Chat-chunk JSON payloads (b"[DONE]" last when the vendor sent it) -> SSE bytes for the client."""
        ...

    def finish(self) -> bytes:
        """The vendor's stream ended without `[DONE]`: the terminal events, if not sent yet."""
        ...

    def fail(self, message: str, kind: str) -> bytes:
        """The error events that end a stream which failed after its first byte."""
        ...


class ClientDialect(Protocol):
    api: str  # the ledger's `api` column: chat, embeddings, responses, messages
    mode: Mode  # which deployments serve it
    native_style: str | None  # the vendor api_style whose wire format is this dialect (pass-through), if any

    def parse(self, raw: bytes, headers: Mapping[str, str], counter: TokenCounter,
              default_output: int) -> ParsedRequest:
        """The client's request -> the canonical one (`body` is a chat-completions body, `native` the client's)."""
        ...

    def render(self, result: JSONResult, parsed: ParsedRequest) -> bytes:
        """A canonical (chat completion) answer -> the body the client gets."""
        ...

    def client_stream(self, parsed: ParsedRequest) -> ClientStream:
        """The stream relay's translator for a canonical (chat chunk) vendor stream."""
        ...

    def native_usage(self, obj: dict[str, Any]) -> Usage | None:
        """Usage of a pass-through answer (only called when `native_style` is set)."""
        ...

    def native_stream(self, parsed: ParsedRequest) -> ClientStream:
        """The stream relay's meter for a pass-through stream (only called when `native_style` is set)."""
        ...

    def error_response(self, exc: Exception, headers: dict[str, str] | None = None) -> Response:
        """Any exception -> the client's error shape (status and retry headers from gateway/http/errors.py)."""
        ...


class EncodedStream:
    """A `ClientStream` for translated dialects: the chat-chunk meter, then the dialect's encoder."""

    __slots__ = ("meter", "encoder")

    def __init__(self, encoder: StreamEncoder) -> None:
        self.meter = StreamMeter(client_wants_usage=True)
        self.encoder = encoder

    def relay(self, batch: list[bytes]) -> bytes:
        feed = self.meter.feed
        return self.encoder.encode([out for out in map(feed, batch) if out is not None])

    def ended(self, batch: list[bytes]) -> bool:
        return self.encoder.done

    def finish(self) -> bytes:
        return self.encoder.finish()

    def fail(self, message: str, kind: str) -> bytes:
        return self.encoder.fail(message, kind)

    def final_usage(self, prompt_estimate: int, counter: TokenCounter) -> Usage:
        return self.meter.final_usage(prompt_estimate, counter)


def native_pool(dialect: ClientDialect, parsed: ParsedRequest, pool: list[Deployment],
                api_styles: Mapping[str, str]) -> list[Deployment]:
    """The deployments a request may reach when it uses what only its own dialect can carry (`native_only`): those
    speaking that dialect. None of them: a 400 naming what the request used."""
    native = [d for d in pool if api_styles.get(d.provider) == dialect.native_style]
    if not native:
        raise BadRequest(f"{', '.join(parsed.native_only)}: only a deployment speaking this API natively can "
                         f"take it, and none serves '{parsed.facts.model}'", code="untranslatable_request")
    return native
