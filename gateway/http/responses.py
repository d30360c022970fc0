"""The request path's successful responses, with their headers encoded once and directly.

Starlette's `Response.__init__` lower-cases, encodes and scans every header for content-length/-type on each
response; the pipeline's header names are already lower-case ASCII, so they are encoded in one pass here.
"""

from __future__ import annotations

from starlette.responses import Response

_JSON = (b"content-type", b"application/json")


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Lower-case header names and values as the ASGI server wants them (latin-1, as Starlette encodes)."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class JSONBytesResponse(Response):
    """A JSON body that is already bytes (the vendor's, relayed unchanged)."""

    media_type = "application/json"

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = raw_headers(headers)
        self.raw_headers += ((b"content-length", str(len(body)).encode("latin-1")), _JSON)
