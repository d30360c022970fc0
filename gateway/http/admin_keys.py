"""Admin endpoints for client keys and team budgets (contract section 5). All require the admin key.

Uses `request.app.state.services`: `.keys` (KeyStore), `.budgets` (Budgets, for current-period spend) and
`.config`. Errors are raised as gateway.errors exceptions; `gateway/http/errors.py` renders them.
The key itself appears in exactly one response: the one that creates it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import BadRequest
from gateway.http.auth import require_admin
from gateway.keys.identity import Identity
from gateway.keys.store import KeyRecord, TeamRecord, budget_from_input, check_team

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])

_KEY_FIELDS = {"team", "budget", "budget_period", "rpm", "tpm"}
_TEAM_FIELDS = {"budget", "budget_period"}


async def _body(request: Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}", parse_float=Decimal)
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})", param=unknown[0])
    return body


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def key_view(services: Any, record: KeyRecord) -> dict[str, Any]:
    view = record.public()
    spent = None
    if record.budget is not None:
        spent = await services.budgets.spent(Identity(team=record.team, key_id=record.id, key_budget=record.budget),
                                             "key")
    view["spent"] = _money(spent)
    return view


async def team_view(services: Any, record: TeamRecord) -> dict[str, Any]:
    view = record.public()
    spent = None
    if record.budget is not None:
        spent = await services.budgets.spent(Identity(team=record.name, team_budget=record.budget), "team")
    view["spent"] = _money(spent)
    return view


@router.post("/keys")
async def create_key(request: Request) -> JSONResponse:
    body = await _body(request, _KEY_FIELDS)
    team = body.get("team")
    if not isinstance(team, str):
        raise BadRequest("team is required", param="team")
    check_team(team)
    budget = budget_from_input(body.get("budget"), body.get("budget_period"))
    services = request.app.state.services
    record, token = await services.keys.create_key(team, budget=budget, rpm=body.get("rpm"), tpm=body.get("tpm"))
    return JSONResponse({"id": record.id, "key": token, **{k: v for k, v in record.public().items() if k != "id"}},
                        status_code=201)


@router.get("/keys")
async def list_keys(request: Request) -> dict[str, Any]:
    services = request.app.state.services
    return {"data": [await key_view(services, r) for r in await services.keys.list_keys()]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    record = await request.app.state.services.keys.revoke_key(key_id)
    return {"id": record.id, "revoked": True, "revoked_at": record.public()["revoked_at"]}


@router.put("/teams/{team}")
async def set_team(team: str, request: Request) -> dict[str, Any]:
    body = await _body(request, _TEAM_FIELDS)
    check_team(team)
    budget = budget_from_input(body.get("budget"), body.get("budget_period"))
    services = request.app.state.services
    return await team_view(services, await services.keys.set_team(team, budget))


@router.get("/teams")
async def list_teams(request: Request) -> dict[str, Any]:
    services = request.app.state.services
    return {"data": [await team_view(services, r) for r in await services.keys.list_teams()]}
