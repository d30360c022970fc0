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

from gateway.domain import PriceVersion
from gateway.errors import BadRequest
from gateway.http.auth import require_admin
from gateway.prices.changes import Change, apply_update
from gateway.prices.formats import parse_datetime, price_fields, version_document
from gateway.prices.store import PriceStore

router = APIRouter()


def _store(request: Request) -> PriceStore:
    return request.app.state.services.price_store  # type: ignore[no-any-return]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _table(request: Request, version: PriceVersion) -> dict[str, Any]:
    services = request.app.state.services
    doc = version_document(version, services.config.deployments)
    doc.pop("reporting_currency", None)
    return doc


def _diff_json(change: Change) -> dict[str, Any]:
    d = change.diff
    return {
        "changed": [{"provider": c.provider, "model": c.model, "field": c.field, "old": c.old, "new": c.new}
                    for c in d.changed],
        "unchanged": [{"provider": p, "model": m} for p, m in d.unchanged],
        "fx_rates_changed": [{"currency": c, "old": o, "new": n} for c, o, n in d.fx_changed],
    }


@router.get("/admin/prices", dependencies=[Depends(require_admin)])
async def get_prices(request: Request) -> JSONResponse:
    book = _store(request).book
    now = _now()
    body = _table(request, book.current(now))
    body["scheduled"] = [{"version": v.version, "effective_from": v.effective_from.isoformat()}
                         for v in book.versions() if v.effective_from > now]
    return JSONResponse(body)


@router.put("/admin/prices", dependencies=[Depends(require_admin)])
async def put_prices(request: Request) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw, parse_float=Decimal)  # numbers, if sent as numbers, stay exact
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object with `prices`", param="prices")
    requested = parse_datetime(body["effective_from"], "effective_from") if body.get("effective_from") else None
    config = request.app.state.services.config
    # Validate against the version in force now first, so a bad request is refused before any write.
    store = _store(request)
    apply_update(store.book.current(_now()), body, config, requested or _now())
    published = await store.publish(lambda base, at: apply_update(base, body, config, at), requested,
                                    source="admin")
    version = published.version
    if version is None:  # nothing changed: no new version; answer with the one in force at that time
        result = _table(request, store.book.current(requested or _now()))
    else:
        result = _table(request, version)
    result["new_version"] = version is not None
    result.update(_diff_json(published.change))
    return JSONResponse(result)


@router.get("/admin/prices/history", dependencies=[Depends(require_admin)])
async def price_history(request: Request, provider: str | None = None, model: str | None = None) -> JSONResponse:
    config = request.app.state.services.config
    deployments = [(d.provider, d.model) for d in config.deployments
                   if (provider is None or d.provider == provider) and (model is None or d.model == model)]
    if not deployments:
        param = "model" if model is not None else "provider"
        raise BadRequest(f"no deployment matches provider={provider!r} model={model!r}", param=param)
    versions = _store(request).book.versions()  # sorted by (effective_from, version)
    out = []
    for key in deployments:
        rows = []
        previous = None
        for v in versions:
            price = v.prices.get(key)
            if price is None:
                continue
            rows.append({"version": v.version, "effective_from": v.effective_from.isoformat(),
                         "changed": previous is None or price != previous, **price_fields(price)})
            previous = price
        out.append({"provider": key[0], "model": key[1], "versions": rows})
    if provider is not None and model is not None:
        return JSONResponse(out[0])
    return JSONResponse({"deployments": out})
