"""`/console/keys` (client keys and team budgets, spent against limit) and `/console/playground` (the routing dry
run). Keys go through the key store and the views `GET /admin/keys` / `GET /admin/teams` answer with; the
playground through the pipeline's `explain`, as `POST /admin/route/explain` does.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from gateway.console import session as S
from gateway.console import web
from gateway.errors import BadRequest, GatewayError
from gateway.explain import decision_json
from gateway.http.admin_keys import key_view, team_view
from gateway.keys.store import budget_from_input, check_team

router = APIRouter(prefix="/console")
# Candidate fields the playground lays out itself; any others (e.g. cache assumptions) get a column each.
KNOWN_COLUMNS = frozenset({"rank", "provider", "model", "expected_cost", "quality", "context_window", "input_price",
                           "output_price", "price_currency", "per", "window", "tier"})
signed_in = Depends(web.require_session)


# ------------------------------------------------------------------------------------------------ keys and teams
def _ratio(spent: str | None, limit: str | None) -> float | None:
    if spent is None or not limit or Decimal(limit) <= 0:
        return None
    return min(1.0, float(Decimal(spent) / Decimal(limit)))


async def _keys_page(request: Request, session: S.Session, status: int = 200, **extra: Any) -> Response:
    services = request.app.state.services
    keys = [await key_view(services, r) for r in await services.keys.list_keys()]
    teams = [await team_view(services, r) for r in await services.keys.list_teams()]
    for row in (*keys, *teams):
        row["ratio"] = _ratio(row.get("spent"), row.get("budget"))
    context: dict[str, Any] = {"created": None, "error": None, "form": {}}
    context.update(extra)
    return web.render(request, "keys.html", session, status=status, title="Keys and teams", active="keys",
                      keys=keys, teams=teams, currency=services.config.gateway.reporting_currency, **context)


@router.get("/keys")
async def keys(request: Request, session: S.Session = signed_in) -> Response:
    return await _keys_page(request, session)


def _limit(form: dict[str, str], name: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise BadRequest(f"{name} must be a positive whole number", param=name)
    return int(text)


def _budget(form: dict[str, str]) -> Any:
    amount = form.get("budget", "").strip() or None
    return budget_from_input(amount, form.get("budget_period", "").strip() or None if amount else None)


@router.post("/keys/create")
async def create_key(request: Request, session: S.Session = signed_in) -> Response:
    form = await web.checked_form(request, session)
    services = request.app.state.services
    try:
        team = check_team(form.get("team", "").strip())
        record, token = await services.keys.create_key(team, budget=_budget(form), rpm=_limit(form, "rpm"),
                                                        tpm=_limit(form, "tpm"))
    except GatewayError as e:
        return await _keys_page(request, session, status=400, error=getattr(e, "message", str(e)), form=form)
    # The key is in this one response only (never stored, never in a URL): the page shows it once.
    return await _keys_page(request, session, created={"id": record.id, "team": record.team, "key": token})


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, session: S.Session = signed_in) -> Response:
    await web.checked_form(request, session)
    try:
        await request.app.state.services.keys.revoke_key(key_id)
    except GatewayError as e:
        return await _keys_page(request, session, status=404, error=getattr(e, "message", str(e)))
    return await _keys_page(request, session)


@router.post("/teams/set")
async def set_team(request: Request, session: S.Session = signed_in) -> Response:
    form = await web.checked_form(request, session)
    services = request.app.state.services
    try:
        team = check_team(form.get("team", "").strip())
        await services.keys.set_team(team, _budget(form))
    except GatewayError as e:
        return await _keys_page(request, session, status=400, error=getattr(e, "message", str(e)), form=form)
    return await _keys_page(request, session)


# ------------------------------------------------------------------------------------------------ playground
def described_body(form: dict[str, str]) -> dict[str, Any]:
    """A chat-completions body from the playground's form: what a client would send for that request."""
    body: dict[str, Any] = {"model": form.get("model", "auto").strip() or "auto",
                            "messages": [{"role": "user", "content": form.get("prompt", "")}]}
    if form.get("max_tokens", "").strip():
        body["max_tokens"] = int(form["max_tokens"]) if form["max_tokens"].strip().isdigit() else form["max_tokens"]
    if form.get("min_quality", "").strip():
        q = form["min_quality"].strip()
        body["gateway"] = {"min_quality": int(q) if q.isdigit() else q}
    if form.get("tools"):
        body["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    if form.get("json_mode"):
        body["response_format"] = {"type": "json_object"}
    if form.get("stream"):
        body["stream"] = True
    return body


def _models(services: Any) -> list[str]:
    return [*services.config.routes, *dict.fromkeys(d.model for d in services.config.deployments)]


@router.get("/playground")
async def playground(request: Request, session: S.Session = signed_in) -> Response:
    return web.render(request, "playground.html", session, title="Routing playground", active="playground",
                      models=_models(request.app.state.services), form={"model": "auto", "mode": "describe"},
                      result=None, error=None, sent=None, known=KNOWN_COLUMNS)


@router.post("/playground")
async def playground_explain(request: Request, session: S.Session = signed_in) -> Response:
    form = await web.checked_form(request, session)
    services = request.app.state.services
    raw = (form.get("body", "") if form.get("mode") == "paste" else json.dumps(described_body(form))).encode()
    result, error = None, None
    try:
        facts, decision, prices = request.app.state.pipeline.explain(raw, {})
        result = decision_json(facts, decision, prices)
    except GatewayError as e:
        error = getattr(e, "message", str(e))
    return web.render(request, "playground.html", session, status=200 if error is None else 400,
                      title="Routing playground", active="playground", models=_models(services), form=form,
                      result=result, error=error, sent=raw.decode("utf-8", "replace"), known=KNOWN_COLUMNS)
