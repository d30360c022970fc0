"""create_app(config) -> the ASGI app. Builds clients, state, providers and metrics once; starts and stops them."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from gateway.config.load import load_config, resolve_config_path
from gateway.config.schema import Config
from gateway.errors import BadRequest, GatewayError
from gateway.http import ops_routes, openai_routes
from gateway.http.errors import error_response
from gateway.ledger.base import Ledger, MemoryLedger
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.prices.book import PriceBook, version_from_config
from gateway.providers.base import Provider
from gateway.providers.registry import build_providers
from gateway.services import Services
from gateway.state.base import CooldownPolicy, LocalHealth
from gateway.tokens import TokenCounter


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def cooldown_policies(config: Config) -> dict[str, CooldownPolicy]:
    g = config.gateway
    return {
        name: CooldownPolicy(
            p.cooldown_after_failures if p.cooldown_after_failures is not None else g.cooldown_after_failures,
            p.cooldown_s if p.cooldown_s is not None else g.cooldown_s,
        )
        for name, p in config.providers.items()
    }


async def build_services(config: Config, *, ledger: Ledger | None = None,
                         providers: dict[str, Provider] | None = None, replica_id: str | None = None,
                         metrics: Metrics | None = None) -> Services:
    deployments = [d.to_deployment() for d in config.deployments]
    services = Services(
        config=config,
        deployments=deployments,
        price_book=PriceBook([version_from_config(config)]),
        health=LocalHealth(cooldown_policies(config)),
        ledger=ledger if ledger is not None else MemoryLedger(),
        metrics=metrics if metrics is not None else Metrics(),
        providers=providers if providers is not None else build_providers(config),
        tokens=TokenCounter(),
        replica_id=replica_id or config.gateway.replica_id or default_replica_id(),
    )
    return services


async def stop_services(services: Services) -> None:
    for task in list(services.background):
        try:
            await task  # let metering of streams still in progress finish and reach the ledger
        except Exception:
            pass
    await services.ledger.stop()
    for provider in services.providers.values():
        await provider.aclose()


def create_app(config: Config, **overrides: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(config, **overrides)
        await services.ledger.start()
        app.state.services = services
        app.state.pipeline = Pipeline(services)
        try:
            yield
        finally:
            await stop_services(services)

    app = FastAPI(title="LLM cost gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(openai_routes.router)
    app.include_router(ops_routes.router)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(BadRequest(str(first.get("msg", "invalid request")), param=param))

    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory for `gateway serve --workers N` (each worker loads the config the same way)."""
    return create_app(load_config(resolve_config_path(None)))
