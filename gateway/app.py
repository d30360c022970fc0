"""create_app(config) -> the ASGI app. Builds clients, state, providers and metrics once; starts and stops them."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.responses import Response

from gateway.config.load import load_config, resolve_config_path
from gateway.cache.service import build_prefix_cache
from gateway.config.schema import Config, deployment_cache_settings
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge
from gateway import db
from gateway.http import admin_keys, admin_prices, admin_reports, messages_routes, ops_routes, openai_routes
from gateway.http.errors import anthropic_error_response, error_response, http_error_response
from gateway.ledger.base import Ledger
from gateway.ledger.recovery import stale_after_for
from gateway.ledger.rollup import Roller
from gateway.ledger.writer import SqlLedger
from gateway.limits.wiring import build_limits
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.prices.feeds import PriceFeeds
from gateway.prices.gauges import PriceGaugeWatcher
from gateway.prices.store import PriceStore, redis_from_config
from gateway.providers.base import Provider
from gateway.providers.registry import build_providers
from gateway.db import create_engine
from gateway.services import Services
from gateway.tokens import TokenCounter


ROLLUP_SETTLE_MARGIN_S = 600.0


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def build_services(config: Config, *, ledger: Ledger | None = None,
                         providers: dict[str, Provider] | None = None, replica_id: str | None = None,
                         metrics: Metrics | None = None) -> Services:
    """Everything the request path needs, started. `ledger`/`providers` overrides are for tests and benchmarks."""
    metrics = metrics if metrics is not None else Metrics()
    replica = replica_id or config.gateway.replica_id or default_replica_id()
    engine = create_engine(config.gateway.ledger_url)
    await db.upgrade(engine)
    redis = redis_from_config(config)
    price_store = PriceStore(engine, config, redis=redis)
    await price_store.start()
    limits = build_limits(config, engine, redis, metrics=metrics, replica_id=replica)
    await limits.start()
    if ledger is None:
        baseline = config.savings_baseline
        ledger = SqlLedger(engine, replica_id=replica, stale_after_s=stale_after_for(config),
                           price_lookup=price_store.book.get, migrate=False, spool_dir=config.gateway.spool_dir,
                           baseline=(baseline.provider, baseline.model) if baseline is not None else None)
    services = Services(
        config=config,
        deployments=[d.to_deployment() for d in config.deployments],
        price_book=price_store.book,
        health=limits.health,
        ledger=ledger,
        metrics=metrics,
        providers=providers if providers is not None else build_providers(config),
        tokens=TokenCounter(),
        replica_id=replica,
        auth=limits.auth,
        budgets=limits.budgets,
        ratelimit=limits.ratelimit,
        admission=limits.admission,
        settler=limits.settler,
        keys=limits.keys,
        engine=engine,
        price_store=price_store,
        redis=redis,
        shared_state=limits.shared_state,
    )
    services.prefix_cache = build_prefix_cache(deployment_cache_settings(config), services.tokens, redis,
                                               config.gateway.redis_prefix, metrics, services.deployments,
                                               replica_id=replica)
    await services.prefix_cache.start()
    services.closers.append(services.prefix_cache.aclose)
    services.closers.append(limits.stop)
    services.closers.append(price_store.stop)
    await ledger.start()
    services.closers.insert(0, ledger.stop)
    feeds = PriceFeeds(config, price_store, metrics)
    gauges = PriceGaugeWatcher(metrics, lambda: price_store.book, services.deployments)
    services.price_gauges = gauges
    price_store.add_listener(gauges.check)  # a version published or followed shows in the gauges at once
    # Closed ledger days rolled up for fast reports; a day is closed once no row of it can still be open.
    roller = Roller(engine, settle_s=stale_after_for(config) + ROLLUP_SETTLE_MARGIN_S)
    for part in (feeds, gauges, roller):
        await part.start()
        services.closers.insert(0, part.stop)
    return services


async def stop_services(services: Services) -> None:
    # Streams still being metered are the server's request tasks: uvicorn lets them finish (or cancels them past
    # its grace period, when the relay bills what it metered) before the lifespan shutdown that runs this.
    for close in services.closers:
        await close()
    for provider in services.providers.values():
        await provider.aclose()
    if services.redis is not None:
        await services.redis.aclose()
    if services.engine is not None:
        await services.engine.dispose()


MAX_HEADERS = 128
MAX_HEADER_BYTES = 64 * 1024


def headers_refusal(headers: list[tuple[bytes, bytes]]) -> HeadersTooLarge | None:
    """431 for more than MAX_HEADERS headers or MAX_HEADER_BYTES of them (nginx and Node refuse far less)."""
    if len(headers) > MAX_HEADERS:
        return HeadersTooLarge(f"too many request headers (at most {MAX_HEADERS})")
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
    if size > MAX_HEADER_BYTES:
        return HeadersTooLarge(f"request headers exceed {MAX_HEADER_BYTES} bytes")
    return None


class GatewayApp(FastAPI):
    """FastAPI, with the two hot POST routes dispatched before its middleware stack and router (see
    `openai_routes.hot_post`); everything else (lifespan, ops, admin) goes through FastAPI as usual."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = headers_refusal(scope["headers"])
            if refusal is not None:  # the server sets no limit on headers (httptools): the app does
                await error_response(refusal)(scope, receive, send)
                return
        if scope["type"] == "http" and scope["method"] == "POST":
            api = openai_routes.HOT_ROUTES.get(scope["path"])
            if api is not None and not scope.get("root_path"):
                scope["app"] = self
                await openai_routes.hot_post(self, api, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the routes of the OpenAPI schema serve on `path` (for a 405's `Allow`)."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def console_routers() -> tuple[Any, ...]:
    """The web console's routes (`/console`), imported here so that Jinja2 loads only with the app."""
    from gateway.console import routes, routes_manage, routes_prices

    return routes.router, routes_prices.router, routes_manage.router


def create_app(config: Config, **overrides: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(config, **overrides)
        app.state.services = services
        app.state.pipeline = Pipeline(services)
        try:
            yield
        finally:
            await stop_services(services)

    app = GatewayApp(title="LLM cost gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    for router in (openai_routes.router, messages_routes.router, ops_routes.router, admin_prices.router,
                   admin_keys.router, admin_reports.router, *console_routers()):
        app.include_router(router)

    def anthropic_path(request: Request) -> bool:  # errors in Anthropic's shape there (contract 4 and 8)
        return request.url.path.startswith("/v1/messages")

    def respond(request: Request, exc: Exception) -> Response:
        return (anthropic_error_response if anthropic_path(request) else error_response)(exc)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = list(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where, not which: OpenAI names the field
            loc = loc[1:]
        param = ".".join(str(p) for p in loc) or None
        return respond(request, BadRequest(str(first.get("msg", "invalid request")), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"{request.method} {request.url.path[:200]}: {exc.detail}"
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers["allow"] = ", ".join(_allowed_methods(app, request.url.path))
        return http_error_response(exc.status_code, message, headers, anthropic=anthropic_path(request))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Response:
        # Starlette's ServerErrorMiddleware calls this, then re-raises for the server's log: the client gets the
        # error body (500 internal_error) without the exception's text.
        return respond(request, exc)

    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory for `gateway serve --workers N` (each worker loads the config the same way, and tunes its
    garbage collector as a single-process `gateway serve` does)."""
    from gateway.server import tune_gc

    app = create_app(load_config(resolve_config_path(None)))
    tune_gc()
    return app
