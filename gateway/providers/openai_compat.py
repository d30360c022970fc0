"""Adapter for `api_style: openai` providers: the request body is forwarded as is, over one shared client.

One `httpx.AsyncClient` per provider, created at start-up with the provider's key; nothing a client sends
becomes a credential (the pipeline refuses `api_key`-like fields before this point, and the Authorization header
here is always the operator's).
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
import orjson

from gateway.config.schema import ProviderConfig
from gateway.decisions.fallback import BAD_RESPONSE, CONNECT, TIMEOUT
from gateway.domain import Deployment
from gateway.providers.base import JSONResult, UpstreamFailure
from gateway.providers.sse import iter_sse_data

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


class _HttpxEventStream:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def _payloads(self) -> AsyncIterator[bytes]:
        try:
            async for payload in iter_sse_data(self._response.aiter_bytes()):
                yield payload
        except httpx.TimeoutException:
            raise UpstreamFailure(TIMEOUT) from None
        except httpx.TransportError:
            raise UpstreamFailure(CONNECT) from None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._payloads()

    async def aclose(self) -> None:
        await self._response.aclose()


class OpenAICompatProvider:
    def __init__(self, name: str, cfg: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"user-agent": "llm-cost-gateway/0.1"}
        if cfg.api_key is not None and cfg.api_key.get_secret_value():
            headers["authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        self.name = name
        self._client = httpx.AsyncClient(
            base_url=cfg.api_base.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=min(cfg.timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=256, keepalive_expiry=30),
            transport=transport,
        )

    async def _post_json(self, path: str, body: dict[str, Any]) -> JSONResult:
        try:
            resp = await self._client.post(path, content=orjson.dumps(body), headers=_JSON)
        except httpx.TimeoutException:
            raise UpstreamFailure(TIMEOUT) from None
        except httpx.TransportError:
            raise UpstreamFailure(CONNECT) from None
        if resp.status_code != 200:
            raise vendor_error(resp.status_code, resp.content)
        try:
            obj = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(BAD_RESPONSE, status=200) from None
        if not isinstance(obj, dict):
            raise UpstreamFailure(BAD_RESPONSE, status=200)
        return JSONResult(resp.content, obj)

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return await self._post_json("chat/completions", body)

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return await self._post_json("embeddings", body)

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> _HttpxEventStream:
        request = self._client.build_request("POST", "chat/completions", content=orjson.dumps(body), headers=_SSE)
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
