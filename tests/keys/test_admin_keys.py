"""The /admin/keys and /admin/teams endpoints, through the ASGI app."""

from __future__ import annotations

from types import SimpleNamespace
from typing import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.config.load import load_config_data
from gateway.errors import ClientError, NotFound, Unauthorized
from gateway.http.admin_keys import router
from gateway.limits.wiring import build_limits

ADMIN = {"Authorization": "Bearer test-admin"}
CONFIG = {"gateway": {"admin_key": "test-admin", "require_api_key": True},
          "providers": {"p": {"api_base": "http://127.0.0.1:1/v1"}},
          "deployments": [{"provider": "p", "model": "m", "context_window": 1000, "quality": 50,
                           "price": {"input": "0.001", "output": "0.002"}}]}


def _status(exc: ClientError) -> int:  # the lead's http/errors.py owns the real mapping
    return 401 if isinstance(exc, Unauthorized) else 404 if isinstance(exc, NotFound) else 400


@pytest.fixture
async def client(sqlite_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    config = load_config_data(CONFIG, "test.yaml", env={})
    limits = build_limits(config, sqlite_engine)
    app = FastAPI()
    app.include_router(router)
    app.state.services = SimpleNamespace(config=config, keys=limits.keys, budgets=limits.budgets, metrics=None,
                                         auth=limits.auth)

    @app.exception_handler(ClientError)
    async def _err(_: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message, "code": exc.code}}, status_code=_status(exc))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


async def test_admin_key_required(client: httpx.AsyncClient) -> None:
    for method, path in [("POST", "/admin/keys"), ("GET", "/admin/keys"), ("DELETE", "/admin/keys/x"),
                         ("PUT", "/admin/teams/t"), ("GET", "/admin/teams")]:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = await client.request(method, path, headers=headers, json={"team": "t"})
            assert r.status_code == 401, (method, path)


async def test_key_lifecycle(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/keys", headers=ADMIN,
                          json={"team": "search", "budget": "100.50", "budget_period": "month", "rpm": 60})
    assert r.status_code == 201
    created = r.json()
    key, key_id = created["key"], created["id"]
    assert key.startswith(f"gw-{key_id}-")
    auth = client.app.state.services.auth  # type: ignore[attr-defined]
    assert (await auth.authenticate({"Authorization": f"Bearer {key}"})).team == "search"

    listing = (await client.get("/admin/keys", headers=ADMIN)).json()["data"]
    assert listing == [{"id": key_id, "team": "search", "created_at": listing[0]["created_at"], "revoked_at": None,
                        "budget": "100.50", "budget_period": "month", "rpm": 60, "tpm": None, "spent": "0"}]
    assert key not in (await client.get("/admin/keys", headers=ADMIN)).text

    r = await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["revoked"] is True
    with pytest.raises(Unauthorized):
        await auth.authenticate({"Authorization": f"Bearer {key}"})
    assert (await client.delete("/admin/keys/000000000000", headers=ADMIN)).status_code == 404


async def test_bad_bodies(client: httpx.AsyncClient) -> None:
    for body in [{}, {"team": "t", "budget": "5"}, {"team": "t", "budget": "abc", "budget_period": "day"},
                 {"team": "t", "api_key": "x"}, {"team": "t", "rpm": -1}, {"team": "no spaces"}]:
        r = await client.post("/admin/keys", headers=ADMIN, json=body)
        assert r.status_code == 400, body
    r = await client.post("/admin/keys", headers=ADMIN, content=b"{not json")
    assert r.status_code == 400


async def test_teams(client: httpx.AsyncClient) -> None:
    r = await client.put("/admin/teams/search", headers=ADMIN, json={"budget": "1000", "budget_period": "month"})
    assert r.status_code == 200
    assert r.json() == {"team": "search", "budget": "1000", "budget_period": "month", "spent": "0"}
    await client.post("/admin/keys", headers=ADMIN, json={"team": "ads"})
    teams = (await client.get("/admin/teams", headers=ADMIN)).json()["data"]
    assert [t["team"] for t in teams] == ["ads", "search"]
    assert teams[0]["budget"] is None


async def test_json_number_budget_is_exact(client: httpx.AsyncClient) -> None:
    r = await client.put("/admin/teams/t", headers=ADMIN, json={"budget": 0.1, "budget_period": "day"})
    assert r.json()["budget"] == "0.1"  # read from the JSON text, never through a float
