"""The floor: a bare pass-through proxy on the gateway's own server stack, with nothing but forwarding.

FastAPI on uvicorn (uvloop + httptools, access log off), one shared upstream client created at start-up, the body
forwarded as bytes (never parsed) and the vendor's bytes relayed back; a stream is relayed chunk by chunk. The
upstream client is the one the gateway's OpenAI-compatible adapter uses (`HTTP_CLIENT` there), or the one named
by `--client`, so "which client is faster at concurrency 64" is measured on this proxy with nothing else in the way.

    python -m tests.perf.bare_proxy --port 9000 --upstream http://127.0.0.1:8080/bare/v1 [--client aiohttp]
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse

from gateway.server import _http, _loop

_HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-upstream-key"}


def default_client() -> str:
    from gateway.providers import openai_compat

    return str(getattr(openai_compat, "HTTP_CLIENT", "httpx"))


def _is_stream(body: bytes) -> bool:
    return b'"stream":true' in body or b'"stream": true' in body


class HttpxForwarder:
    def __init__(self, upstream: str) -> None:
        import httpx

        self.httpx = httpx
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=512,
                                                                          max_keepalive_connections=256))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        r = await self.client.post(self.url, content=body, headers=_HEADERS)
        return r.status_code, r.content

    async def stream(self, body: bytes) -> tuple[int, AsyncIterator[bytes]]:
        req = self.client.build_request("POST", self.url, content=body, headers=_HEADERS)
        resp = await self.client.send(req, stream=True)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for c in resp.aiter_raw():
                    yield c
            finally:
                await resp.aclose()

        return resp.status_code, chunks()

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpForwarder:
    def __init__(self, upstream: str) -> None:
        import aiohttp

        self.aiohttp = aiohttp
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: Any = None

    async def start(self) -> None:
        aiohttp = self.aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(self.url, data=body, headers=_HEADERS) as r:
            return r.status, await r.read()

    async def stream(self, body: bytes) -> tuple[int, AsyncIterator[bytes]]:
        resp = await self.session.post(self.url, data=body, headers=_HEADERS)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for c in resp.content.iter_any():
                    yield c
            finally:
                resp.release()

        return resp.status, chunks()

    async def aclose(self) -> None:
        await self.session.close()


def create_app(upstream: str, client: str) -> FastAPI:
    fwd: Any = AiohttpForwarder(upstream) if client == "aiohttp" else HttpxForwarder(upstream)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if hasattr(fwd, "start"):
            await fwd.start()
        yield
        await fwd.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        if _is_stream(body):
            status, chunks = await fwd.stream(body)
            return StreamingResponse(chunks, status_code=status, media_type="text/event-stream")
        status, content = await fwd.post(body)
        return Response(content, status_code=status, media_type="application/json")

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL; requests go to <upstream>/chat/completions")
    ap.add_argument("--client", choices=("httpx", "aiohttp"), default=None)
    args = ap.parse_args()
    client = args.client or default_client()
    uvicorn.run(create_app(args.upstream, client), host="127.0.0.1", port=args.port, loop=_loop(), http=_http(),
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
