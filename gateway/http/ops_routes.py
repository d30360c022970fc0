"""Operational endpoints: liveness, readiness, metrics, and the routing dry run.

With `gateway serve --workers N` (prometheus-client multiprocess mode) the scrape is answered by one worker, which
refreshes only its own state gauges before merging every worker's files. So that the other workers' shares
(their ledger backlog, their view of provider health) are not left at whatever they were when they last answered
a scrape, this router's lifespan also refreshes the state gauges of every worker once a second in that mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.explain import decision_json
from gateway.http.auth import require_admin
from gateway.http.errors import error_response
from gateway.http.openai_routes import read_body
from gateway.metrics_multiprocess import metrics_dir_in_use, metrics_response

log = logging.getLogger(__name__)

GAUGE_REFRESH_INTERVAL_S = 1.0
# A dependency that does not answer within this is "not ready", answered before a probe's own timeout (deploy/:
# 2 s in Kubernetes, 3 s in compose) instead of a hung request.
READY_CHECK_TIMEOUT_S = 1.5


async def _refresh_gauges_forever(services: Any, interval_s: float) -> None:
    while True:
        try:
            services.refresh_gauges()
        except Exception:  # a failed refresh must not end the loop (the next scrape refreshes again)
            log.exception("refreshing the state gauges failed")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def _gauge_refresh(app: Any) -> AsyncIterator[None]:
    """Runs inside the app's lifespan (FastAPI nests an included router's lifespan), once services exist."""
    services = getattr(getattr(app, "state", None), "services", None)
    task: asyncio.Task[None] | None = None
    if services is not None and metrics_dir_in_use():
        task = asyncio.create_task(_refresh_gauges_forever(services, GAUGE_REFRESH_INTERVAL_S),
                                   name="state-gauges")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


router = APIRouter(lifespan=_gauge_refresh)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception never retrieved"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    services = request.app.state.services
    checks: dict[str, str] = {"config": "ok"}
    ready = True

    async def ledger_ok() -> None:
        async with services.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    redis = getattr(services, "redis", None)
    probes = []
    if services.engine is not None:
        probes.append(("ledger", ledger_ok))
    if redis is not None:
        probes.append(("redis", redis.ping))
    checks.update((name, "unknown") for name, _ in probes)  # in this order in the answer

    async def run(name: str, probe: Any) -> None:
        nonlocal ready
        task = asyncio.ensure_future(probe())
        # Not wait_for: cancelling a probe stuck on a hung server can itself hang (the driver's cleanup talks to
        # that server), and wait_for would wait for it. The cancelled probe finishes in the background.
        done, _ = await asyncio.wait({task}, timeout=READY_CHECK_TIMEOUT_S)
        if not done:
            task.cancel()
            task.add_done_callback(_consume)
            checks[name], ready = "timeout", False
        elif task.exception() is not None:  # which dependency is down and how, never its connection string
            checks[name], ready = type(task.exception()).__name__, False
        else:
            checks[name] = "ok"

    await asyncio.gather(*(run(name, probe) for name, probe in probes))  # together: one timeout at most
    if not ready:
        # Degraded, not down: requests are still served while the ledger spools to its journal and, in degrade
        # mode, while budgets and rate limits run on local shares (contract section 8).
        degradable = {"ledger": _can_spool(services.ledger),
                      "redis": services.config.gateway.on_shared_state_unavailable == "degrade"}
        failed = [name for name, state in checks.items() if state != "ok"]
        if all(degradable.get(name, False) for name in failed):
            for name in failed:
                checks[name] += " (spooling)" if name == "ledger" else " (local limits)"
            return JSONResponse({"status": "degraded", "checks": checks})
        return JSONResponse({"status": "not ready", "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


def _can_spool(ledger: Any) -> bool:
    can_spool = getattr(ledger, "can_spool", None)
    return bool(can_spool()) if can_spool is not None else False


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
        facts, decision, prices = await request.app.state.pipeline.explain_warm(raw, request.headers)
    except GatewayError as exc:
        return error_response(exc)
    return decision_json(facts, decision, prices)
