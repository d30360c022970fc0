"""`/console/prices`: the live table, each deployment's history as a step chart, scheduled versions; a price change
(previewed first: its diff and which recent requests would route differently) and a price-file import (its dry-run
diff first). Changes go through `gateway.prices.operations`, as `PUT /admin/prices` and `gateway prices import` do.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from gateway.console import preview as P
from gateway.console import session as S
from gateway.console import web
from gateway.console.charts import step_chart
from gateway.errors import GatewayError
from gateway.http.admin_prices import put_result
from gateway.ledger.queries import recent_requests
from gateway.prices import operations as ops
from gateway.prices.formats import FORMATS, PRICE_FIELDS, parse

router = APIRouter(prefix="/console")
signed_in = Depends(web.require_session)
# The price fields a change may set (tiers and off-peak windows are set through the API or a price file).
CHANGE_FIELDS = tuple(f for f in ("input", "output", "cached_input", "cache_write", "currency", "per")
                      if f in PRICE_FIELDS)
PREVIEW_SAMPLE = 1000  # the newest successful requests a price change is previewed against


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _history_charts(services: Any, now: datetime) -> list[dict[str, Any]]:
    keys = [(d.provider, d.model) for d in services.config.deployments]
    out = []
    for h in ops.history(services.price_store.book, keys):
        rows = h["versions"]
        changes = [r for r in rows if r["changed"]]
        series = {f"{name} / {rows[-1]['per'] if rows else ''}": [
            (datetime.fromisoformat(r["effective_from"]), Decimal(r[name])) for r in changes]
            for name in ("input", "output")}
        out.append({**h, "chart": step_chart(series, now, f"{h['provider']}/{h['model']} price history"),
                    "changes": changes})
    return out


def _page(request: Request, session: S.Session, status: int = 200, **extra: Any) -> Response:
    services = request.app.state.services
    now = _now()
    live = ops.live_table(services.price_store.book, services.config, now)
    context: dict[str, Any] = {"form": {}, "error": None, "preview": None, "diff": None, "import_form": {},
                               "import_result": None, "notice": request.query_params.get("notice")}
    context.update(extra)
    return web.render(request, "prices.html", session, status=status, title="Prices", active="prices", live=live,
                      histories=_history_charts(services, now), formats=FORMATS, fields=CHANGE_FIELDS,
                      deployments=[f"{d.provider}/{d.model}" for d in services.config.deployments], **context)


@router.get("/prices")
async def prices(request: Request, session: S.Session = signed_in) -> Response:
    return _page(request, session)


def _change_body(form: dict[str, str]) -> dict[str, Any]:
    provider, _, model = form.get("deployment", "").partition("/")
    entry: dict[str, Any] = {"provider": provider, "model": model}
    entry.update({f: form[f].strip() for f in CHANGE_FIELDS if form.get(f, "").strip()})
    body: dict[str, Any] = {"prices": [entry]}
    if form.get("effective_from", "").strip():
        body["effective_from"] = form["effective_from"].strip()
    return body


@router.post("/prices/preview")
async def preview_change(request: Request, session: S.Session = signed_in) -> Response:
    form = await web.checked_form(request, session)
    services = request.app.state.services
    body = _change_body(form)
    try:
        now = _now()
        change = ops.preview_update(services.price_store, services.config, body, now)
        samples = [P.Sample(*r) for r in await recent_requests(services.engine, PREVIEW_SAMPLE)]
        moved = P.reroute(services.config, samples, services.price_store.book.current(now), change.version, now)
    except GatewayError as e:
        return _page(request, session, status=400, form=form, error=getattr(e, "message", str(e)))
    return _page(request, session, form=form, diff=ops.diff_json(change), preview=moved,
                 currency=services.config.gateway.reporting_currency)


@router.post("/prices/apply")
async def apply_change(request: Request, session: S.Session = signed_in) -> Response:
    form = await web.checked_form(request, session)
    try:
        result = await put_result(request.app.state.services, _change_body(form))
    except GatewayError as e:
        return _page(request, session, status=400, form=form, error=getattr(e, "message", str(e)))
    notice = (f"Stored price version {result['version']}, in force from {result['effective_from']}."
              if result["new_version"] else "Nothing changed: no new price version.")
    return RedirectResponse("/console/prices?notice=" + quote(notice), status_code=303)


@router.post("/prices/import")
async def import_prices(request: Request, session: S.Session = signed_in) -> Response:
    form = await web.checked_form(request, session)
    services = request.app.state.services
    fmt, text, apply = form.get("format", "gateway"), form.get("text", ""), form.get("action") == "apply"
    if fmt not in FORMATS:
        return _page(request, session, status=400, import_form=form, error=f"format: choose one of {FORMATS}")
    try:
        parsed = parse(text, fmt)
        published = await ops.import_file(services.price_store, services.config, parsed,
                                          source=f"console-import:{fmt}", dry_run=not apply)
    except GatewayError as e:
        return _page(request, session, status=400, import_form=form, error=getattr(e, "message", str(e)))
    if apply:
        stored = ", ".join(f"{v.version} (from {v.effective_from.isoformat()})" for v in published.versions)
        notice = f"Stored price version {stored}." if stored else "No change: no new price version."
        return RedirectResponse("/console/prices?notice=" + quote(notice), status_code=303)
    return _page(request, session, import_form=form, import_result=published.change.diff)
