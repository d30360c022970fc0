"""Operational endpoints: liveness, readiness, metrics, and the routing dry run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.explain import decision_json
from gateway.http.auth import require_admin
from gateway.http.errors import error_response
from gateway.http.openai_routes import read_body
from gateway.metrics_multiprocess import metrics_response

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    services = request.app.state.services
    checks: dict[str, str] = {"config": "ok"}
    try:
        if services.engine is not None:
            async with services.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            checks["ledger"] = "ok"
        redis = getattr(services, "redis", None)
        if redis is not None:
            await redis.ping()
            checks["redis"] = "ok"
    except Exception as exc:  # report which dependency is down, not its connection string
        checks["error"] = type(exc).__name__
        return JSONResponse({"status": "not ready", "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    services = request.app.state.services
    services.refresh_gauges()
    body, content_type = metrics_response(services.metrics.registry, request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.post("/admin/route/explain", dependencies=[Depends(require_admin)])
async def route_explain(request: Request) -> Any:
    try:
        raw = await read_body(request)
        facts, decision, prices = request.app.state.pipeline.explain(raw, request.headers)
    except GatewayError as exc:
        return error_response(exc)
    return decision_json(facts, decision, prices)
