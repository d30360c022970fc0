"""Operator API for the price table (contract section 5): read it, change it, see a deployment's history.

Decimals travel as JSON strings both ways (numbers are accepted on the way in, read exactly from the request's
text). Errors are raised as `gateway.errors` exceptions; the app's error handler renders them OpenAI-style.
Services come from `request.app.state.services`: `.config` (Config), `.price_store` (PriceStore),
`.metrics` (Metrics).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.errors import BadRequest
from gateway.http.auth import require_admin
from gateway.prices import operations as ops
from gateway.prices.store import PriceStore

router = APIRouter()


def _store(request: Request) -> PriceStore:
    return request.app.state.services.price_store  # type: ignore[no-any-return]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@router.get("/admin/prices", dependencies=[Depends(require_admin)])
async def get_prices(request: Request) -> JSONResponse:
    return JSONResponse(ops.live_table(_store(request).book, request.app.state.services.config, _now()))


@router.put("/admin/prices", dependencies=[Depends(require_admin)])
async def put_prices(request: Request) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw, parse_float=Decimal)  # numbers, if sent as numbers, stay exact
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    return JSONResponse(await put_result(request.app.state.services, body))


async def put_result(services: Any, body: Any) -> dict[str, Any]:
    """The PUT's answer (the console's price change uses it too)."""
    config, store = services.config, services.price_store
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object with `prices`", param="prices")
    published = await ops.update(store, config, body, _now())
    version = published.version
    if version is None:  # nothing changed: no new version; answer with the one in force at that time
        result = ops.table(store.book.current(ops.requested_time(body) or _now()), config)
    else:
        result = ops.table(version, config)
    result["new_version"] = version is not None
    result.update(ops.diff_json(published.change))
    return result


@router.get("/admin/prices/history", dependencies=[Depends(require_admin)])
async def price_history(request: Request, provider: str | None = None, model: str | None = None) -> JSONResponse:
    config = request.app.state.services.config
    deployments = [(d.provider, d.model) for d in config.deployments
                   if (provider is None or d.provider == provider) and (model is None or d.model == model)]
    if not deployments:
        param = "model" if model is not None else "provider"
        raise BadRequest(f"no deployment matches provider={provider!r} model={model!r}", param=param)
    out = ops.history(_store(request).book, deployments)
    if provider is not None and model is not None:
        return JSONResponse(out[0])
    return JSONResponse({"deployments": out})
