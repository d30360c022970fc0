"""`/console`: sign-in, sign-out, the spend page (and its downloads), the health page, static assets.

Prices, keys and teams, and the routing playground are in `routes_prices.py` and `routes_manage.py`. All pages
read and write through the functions the admin API and the CLI use (contract section 5).
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from gateway.console import health as H
from gateway.console import session as S
from gateway.console import spend as SP
from gateway.console import web
from gateway.console.charts import stacked_bars
from gateway.http.admin_reports import _book
from gateway.ledger import reports
from gateway.ledger.queries import FILTER_CHOICES, GROUP_BY_CHOICES
from gateway.prices.feeds import feed_label


@contextlib.asynccontextmanager
async def _sampler(app: Any) -> AsyncIterator[None]:
    services = getattr(getattr(app, "state", None), "services", None)
    if services is None or services.config.gateway.admin_key is None:  # no admin key: no console to show it
        yield
        return
    sampler = H.Sampler(services.metrics.registry)
    app.state.console_sampler = sampler
    async with sampler.running():
        yield


router = APIRouter(prefix="/console", lifespan=_sampler)
Session = S.Session
signed_in = Depends(web.require_session)


def _safe_next(target: str | None) -> str:
    # Only a console path of this site: never an absolute URL (an open redirect) or a scheme-relative one.
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/spend"


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return web.static(name)


@router.get("")
@router.get("/")
async def index(request: Request, session: Session = signed_in) -> Response:
    return RedirectResponse("/console/spend", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    if web.current_session(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return web.render(request, "login.html", None, next=_safe_next(next),
                      configured=web.admin_key(request) is not None, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await web.read_form(request)
    expected = web.admin_key(request)
    given = form.get("admin_key", "")
    target = _safe_next(form.get("next"))
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return web.render(request, "login.html", None, status=401, next=target, configured=expected is not None,
                          error="That is not the admin key.")
    key = web.signing_key(request)
    assert key is not None
    cookie, _ = S.issue(key)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(S.COOKIE, cookie, max_age=S.LIFETIME_S, path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, session: Session = signed_in) -> Response:
    await web.checked_form(request, session)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(S.COOKIE, path="/console", httponly=True, samesite="strict")
    return response


# ------------------------------------------------------------------------------------------------ spend
def _spend_query(request: Request) -> SP.SpendQuery:
    return SP.parse_query(request.query_params, request.app.state.services.config.gateway.reporting_currency)


@router.get("/spend")
async def spend(request: Request, session: Session = signed_in) -> Response:
    services = request.app.state.services
    config = services.config
    error, page, q = None, None, None
    try:
        q = _spend_query(request)
        if services.engine is None:
            raise reports.ReportError("this gateway has no ledger database")
        page = await SP.load(services.engine, _book(services), q)
    except reports.ReportError as e:
        error = str(e)
    teams = sorted({r.name for r in await services.keys.list_teams()}) if services.keys is not None else []
    options = {
        "team": teams, "provider": sorted(config.providers), "model": sorted({d.model for d in config.deployments}),
        "route": sorted(config.routes), "api": ["chat", "responses", "messages", "embeddings"],
    }
    return web.render(request, "spend.html", session, title="Spend", active="spend", q=q, page=page, error=error,
                      stacks=SP.STACKS, group_choices=GROUP_BY_CHOICES, filter_names=FILTER_CHOICES,
                      options=options, columns=reports.COLUMNS, money=reports.money_str,
                      line_cells=reports.line_cells,
                      chart=stacked_bars(page.chart, q.currency) if page is not None and q is not None else None,
                      params=request.query_params)


@router.get("/spend.{fmt}")
async def spend_download(fmt: str, request: Request, session: Session = signed_in) -> Response:
    services = request.app.state.services
    if fmt not in ("csv", "json"):
        return Response("choose spend.csv or spend.json", status_code=404, media_type="text/plain")
    try:
        q = _spend_query(request)
        if services.engine is None:
            raise reports.ReportError("this gateway has no ledger database")
        body = await SP.download(services.engine, _book(services), q, fmt)
    except reports.ReportError as e:
        return Response(f"error: {e}\n", status_code=400, media_type="text/plain")
    name = f"spend_{q.start}_{q.end}.{fmt}".replace(":", "")
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return Response(body, media_type=media, headers={**web.SECURITY_HEADERS,
                                                     "Content-Disposition": f'attachment; filename="{name}"'})


# ------------------------------------------------------------------------------------------------ health
@router.get("/health")
async def health(request: Request, session: Session = signed_in) -> Response:
    services = request.app.state.services
    sampler: H.Sampler | None = getattr(request.app.state, "console_sampler", None)
    services.refresh_gauges()  # the same refresh a /metrics scrape does: ledger backlog, provider health
    window_s, then = sampler.baseline() if sampler is not None else (None, None)
    now = H.snapshot(services.metrics.registry)
    summary = H.summarize(services.config.providers, services.health.cooling(), now, then, window_s)
    last = dict(summary.feeds)  # shown by label: the feed's URL without credentials or query
    feeds = [(feed_label(f.url), last.get(feed_label(f.url))) for f in services.config.price_feeds]
    return web.render(request, "health.html", session, title="Health", active="health", h=summary, feeds=feeds,
                      now=datetime.now(timezone.utc).timestamp(), spool=_spool(services))


def _spool(services: Any) -> dict[str, Any] | None:
    """The ledger's spool (writes journaled on local disk while the database is unreachable), where it has one."""
    spool = getattr(services.ledger, "spool", None)
    if spool is None:
        return None
    return {name: getattr(spool, name, None) for name in ("spooling", "pending", "spooled_total", "drained_total")}

