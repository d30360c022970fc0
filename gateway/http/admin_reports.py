"""`GET /admin/reports/spend?from=&to=&group_by=&currency=&format=csv|json` (contract sections 5 and 7).

The same report as `gateway report`, from the ledger database of `request.app.state.services.engine`; FX rates by
price version from the live price book (`services.price_store.book`, else `services.price_book`). Bad arguments
are 400s in the OpenAI error shape (raised as `BadRequest`, rendered by the app's error handler).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway.errors import BadRequest
from gateway.http.auth import require_admin
from gateway.ledger import reports
from gateway.ledger.queries import fetch_partials
from gateway.prices.book import PriceBook

router = APIRouter()


def _book(services: Any) -> PriceBook:
    store = getattr(services, "price_store", None)
    return store.book if store is not None else services.price_book  # type: ignore[no-any-return]


@router.get("/admin/reports/spend", dependencies=[Depends(require_admin)])
async def spend(
    request: Request,
    from_: str = Query(..., alias="from"),
    to: str = Query(...),
    group_by: str = Query(""),
    currency: str | None = Query(None),
    format: str = Query("json"),
) -> Response:
    services = request.app.state.services
    if services.engine is None:
        raise BadRequest("this gateway has no ledger database", code="ledger_unavailable")
    target = (currency or services.config.gateway.reporting_currency).upper()
    try:
        window = reports.make_window(from_, to)
        groups = reports.parse_group_by(group_by)
        if format not in ("csv", "json"):
            raise reports.ReportError(f"format: choose csv or json, got {format!r}", "format")
        partials = await fetch_partials(services.engine, window, groups)
        report = reports.build_report(partials, window, groups, target, reports.fx_from_book(_book(services)))
    except reports.ReportError as e:
        raise BadRequest(str(e), param=e.param) from None
    if format == "csv":
        return Response(reports.to_csv(report), media_type="text/csv; charset=utf-8")
    return JSONResponse(reports.to_json_obj(report))
