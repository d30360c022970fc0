"""Adapter for `api_style: litellm` providers (vendors that do not speak the OpenAI dialect).

litellm is imported on first use only: it costs seconds and hundreds of MB, and the OpenAI-compatible path must
never pay that. Its responses are turned back into OpenAI-format JSON and SSE payloads, so the pipeline treats
both adapters alike.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

import orjson

from gateway.config.schema import ProviderConfig
from gateway.decisions.fallback import BAD_RESPONSE, CONNECT, TIMEOUT
from gateway.domain import Deployment
from gateway.providers.base import JSONResult, UpstreamFailure

_litellm: Any = None


def _load() -> Any:
    global _litellm  # a lazily imported module, not state: the one module-level cache in the package
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.drop_params = True
        litellm.telemetry = False
        _litellm = litellm
    return _litellm


def _failure(exc: Exception) -> UpstreamFailure:
    name = type(exc).__name__
    if "Timeout" in name:
        return UpstreamFailure(TIMEOUT)
    if "APIConnectionError" in name:
        return UpstreamFailure(CONNECT)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return UpstreamFailure(f"http_{status}", status=status, message=str(getattr(exc, "message", "")))
    return UpstreamFailure(BAD_RESPONSE)


class _LitellmStream:
    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        try:
            async for chunk in self._chunks:
                yield [orjson.dumps(chunk.model_dump(exclude_none=True, warnings=False))]
        except UpstreamFailure:
            raise
        except Exception as exc:  # litellm raises its own hierarchy; translate at the edge
            raise _failure(exc) from None
        yield [b"[DONE]"]

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self._batches()

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


class LitellmProvider:
    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        self.name = name
        self._cfg = cfg

    def _kwargs(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k != "model"}
        kwargs["model"] = f"{self._cfg.litellm_provider}/{deployment.upstream_model}"
        kwargs["api_base"] = self._cfg.api_base
        if self._cfg.api_key is not None:
            kwargs["api_key"] = self._cfg.api_key.get_secret_value()
        kwargs["timeout"] = self._cfg.timeout_s
        kwargs["num_retries"] = 0  # fallback is the gateway's job
        return kwargs

    async def _call(self, fn_name: str, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        fn = getattr(_load(), fn_name)
        try:
            resp = await fn(**self._kwargs(deployment, body))
        except Exception as exc:
            raise _failure(exc) from None
        obj = resp.model_dump(exclude_none=True, warnings=False)
        return JSONResult(orjson.dumps(obj), obj)

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return await self._call("acompletion", deployment, body)

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> JSONResult:
        return await self._call("aembedding", deployment, body)

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> _LitellmStream:
        litellm = _load()
        try:
            chunks = await litellm.acompletion(**self._kwargs(deployment, body))
        except Exception as exc:
            raise _failure(exc) from None
        return _LitellmStream(chunks)

    async def aclose(self) -> None:
        return None
