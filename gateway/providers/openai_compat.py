"""Adapter for `api_style: openai` providers: the request body is forwarded as is, over one shared client.

One `aiohttp.ClientSession` per provider (created on first use, inside the serving event loop), with the
provider's key; nothing a client sends becomes a credential (the pipeline refuses `api_key`-like fields before
this point, and the Authorization header here is always the operator's).

aiohttp rather than httpx, by measurement (`make bench`, tests/perf/RESULTS.md): on the bare pass-through proxy at
concurrency 64, httpx's connection pool served ~460 req/s at ~1.5 ms CPU per request, aiohttp ~3,500 req/s at
~0.2 ms. Passing an httpx `transport` (a test seam, e.g. `httpx.MockTransport`) selects the httpx client instead;
both raise the same `UpstreamFailure` kinds.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator

import aiohttp
import orjson

from gateway.config.schema import ProviderConfig
from gateway.decisions.fallback import BAD_RESPONSE, CONNECT, TIMEOUT
from gateway.domain import Deployment
from gateway.providers.base import EventStream, JSONResult, UpstreamFailure
from gateway.providers.sse import iter_sse_batches

if TYPE_CHECKING:
    import httpx

HTTP_CLIENT = "aiohttp"  # which client the upstream calls use (the bare benchmark proxy uses the same)

_JSON = {"content-type": "application/json", "accept": "application/json"}
_SSE = {"content-type": "application/json", "accept": "text/event-stream"}


def vendor_error(status: int, body: bytes) -> UpstreamFailure:
    """Read the vendor's error body (OpenAI shape or a flat one) into an UpstreamFailure."""
    message, code, param = "", None, None
    try:
        obj = orjson.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or err.get("msg") or err.get("error_msg") or "")
            code = str(err["code"]) if err.get("code") is not None else None
            param = str(err["param"]) if err.get("param") is not None else None
        elif isinstance(err, str):
            message = err
    except orjson.JSONDecodeError:
        message = body[:500].decode("utf-8", "replace")
    return UpstreamFailure(f"http_{status}", status=status, message=message, code=code, param=param)


def _translate(exc: BaseException) -> UpstreamFailure:
    """aiohttp's errors, translated once: timeouts first (ServerTimeoutError is also a connection error); an
    answer that is not HTTP at all (a bad status line or headers: ClientResponseError without a response) is a
    bad response, not a connection failure; anything else (refused, reset, cut mid-body) is `connect`."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamFailure(TIMEOUT)
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamFailure(BAD_RESPONSE)
    return UpstreamFailure(CONNECT)


def _parse_json(content: bytes) -> JSONResult:
    try:
        obj = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(BAD_RESPONSE, status=200) from None
    if not isinstance(obj, dict):
        raise UpstreamFailure(BAD_RESPONSE, status=200)
    return JSONResult(content, obj)


class _AiohttpEventStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        # One batch per network read (iter_any: whatever arrived), split synchronously.
        try:
            async for batch in iter_sse_batches(self._response.content.iter_any()):
                yield batch
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _translate(e) from None

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._batches()

    async def aclose(self) -> None:
        # A response read to its end goes back to the pool; one cut short closes its connection.
        self._response.release()


class OpenAICompatProvider:
    STYLE_HEADERS: dict[str, str] = {}  # sent on every call (an API version header)

    def __init__(self, name: str, cfg: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"user-agent": "llm-cost-gateway/0.1", **self.STYLE_HEADERS}
        if cfg.api_key is not None and cfg.api_key.get_secret_value():
            headers.update(self._auth_headers(cfg.api_key.get_secret_value()))
        self.name = name
        self._base = cfg.api_base.rstrip("/") + "/"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=None, connect=min(cfg.timeout_s, 10.0),
                                              sock_read=cfg.timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._httpx: _HttpxClient | None = (
            _HttpxClient(self._base, headers, cfg.timeout_s, transport) if transport is not None else None)

    def _auth_headers(self, key: str) -> dict[str, str]:
        """The operator's credential, as this API style sends it."""
        return {"authorization": f"Bearer {key}"}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=connector, raise_for_status=False)
        return self._session

    async def _post_json(self, path: str, body: dict[str, Any]) -> JSONResult:
        if self._httpx is not None:
            return await self._httpx.post_json(path, body)
        try:
            async with self._client().post(self._base + path, data=orjson.dumps(body), headers=_JSON) as resp:
                content = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _translate(e) from None
        if status != 200:
            raise vendor_error(status, content)
        return _parse_json(content)

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return await self._post_json("chat/completions", body)

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return await self._post_json("embeddings", body)

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> EventStream:
        return await self._open_stream("chat/completions", body)

    async def _open_stream(self, path: str, body: dict[str, Any]) -> EventStream:
        if self._httpx is not None:
            return await self._httpx.stream(path, body)
        try:
            resp = await self._client().post(self._base + path, data=orjson.dumps(body), headers=_SSE)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _translate(e) from None
        if resp.status != 200:
            try:
                content = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                content = b""
            finally:
                resp.release()
            raise vendor_error(resp.status, content)
        return _AiohttpEventStream(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._httpx is not None:
            await self._httpx.aclose()


# ---- httpx, for tests that inject a transport ------------------------------------------------------------------

class _HttpxEventStream:
    def __init__(self, response: Any) -> None:
        self._response = response

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        import httpx

        try:
            async for batch in iter_sse_batches(self._response.aiter_bytes()):
                yield batch
        except httpx.TimeoutException:
            raise UpstreamFailure(TIMEOUT) from None
        except httpx.TransportError:
            raise UpstreamFailure(CONNECT) from None

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._batches()

    async def aclose(self) -> None:
        await self._response.aclose()


class _HttpxClient:
    def __init__(self, base: str, headers: dict[str, str], timeout_s: float, transport: Any) -> None:
        import httpx

        self._httpx = httpx
        self._client = httpx.AsyncClient(base_url=base, headers=headers, transport=transport,
                                         timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))

    async def post_json(self, path: str, body: dict[str, Any]) -> JSONResult:
        httpx = self._httpx
        try:
            resp = await self._client.post(path, content=orjson.dumps(body), headers=_JSON)
        except httpx.TimeoutException:
            raise UpstreamFailure(TIMEOUT) from None
        except httpx.TransportError:
            raise UpstreamFailure(CONNECT) from None
        if resp.status_code != 200:
            raise vendor_error(resp.status_code, resp.content)
        return _parse_json(resp.content)

    async def stream(self, path: str, body: dict[str, Any]) -> _HttpxEventStream:
        httpx = self._httpx
        request = self._client.build_request("POST", path, content=orjson.dumps(body), headers=_SSE)
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise UpstreamFailure(TIMEOUT) from None
        except httpx.TransportError:
            raise UpstreamFailure(CONNECT) from None
        if resp.status_code != 200:
            try:
                content = await resp.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await resp.aclose()
            raise vendor_error(resp.status_code, content)
        return _HttpxEventStream(resp)

    async def aclose(self) -> None:
        await self._client.aclose()
