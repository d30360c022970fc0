"""GET/PUT /admin/prices and the history endpoint, through a real ASGI app."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.errors import GatewayError
from gateway.http.admin_prices import router
from gateway.http.errors import error_response
from gateway.metrics import Metrics
from gateway.prices.store import PriceStore
from tests.prices.conftest import make_config

AUTH = {"Authorization": "Bearer test-admin-key"}


@pytest.fixture
async def client(sqlite_engine) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    config = make_config()
    store = PriceStore(sqlite_engine, config)
    await store.start(follow=False)
    app = FastAPI()
    app.include_router(router)
    app.state.services = SimpleNamespace(config=config, price_store=store, metrics=Metrics())

    @app.exception_handler(GatewayError)
    async def _errors(request: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


async def test_admin_endpoints_need_the_admin_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/prices")).status_code == 401
    r = await client.get("/admin/prices", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert (await client.put("/admin/prices", json={"prices": []})).status_code == 401


async def test_get_shows_the_table_in_force_with_decimals_as_strings(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/prices", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == 1 and body["effective_from"].startswith("1970-01-01")
    first = body["prices"][0]
    assert first == {"provider": "deepseek", "model": "deepseek-v2", "currency": "CNY", "per": "1K",
                     "input": "0.001", "output": "0.002", "cached_input": "0.0001",
                     "context_window": 32000, "quality": 86}
    qwen_plus = next(p for p in body["prices"] if p["model"] == "qwen-plus")
    assert qwen_plus["tiers"][1] == {"up_to": 128000, "input": "2.4", "output": "20", "cached_input": None}


async def test_put_changes_a_subset_and_returns_the_new_version(client: httpx.AsyncClient) -> None:
    r = await client.put("/admin/prices", headers=AUTH, content=b'{"prices": [{"provider": "dashscope", '
                         b'"model": "qwen-long", "input": "0.00050000000000000000001"}], "fx_rates": {"USD": 7.123}}')
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and body["new_version"] is True
    qwen = next(p for p in body["prices"] if p["model"] == "qwen-long")
    assert qwen["input"] == "0.00050000000000000000001" and qwen["output"] == "0.02"  # exact; output kept
    assert body["fx_rates"] == {"USD": "7.123"}  # a JSON number, read exactly from the text
    assert body["changed"] == [{"provider": "dashscope", "model": "qwen-long", "field": "input", "old": "0.02",
                                "new": "0.00050000000000000000001"}]
    assert (await client.get("/admin/prices", headers=AUTH)).json()["version"] == 2


async def test_put_with_a_future_effective_from_is_scheduled(client: httpx.AsyncClient) -> None:
    at = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    r = await client.put("/admin/prices", headers=AUTH, json={
        "effective_from": at.isoformat(),
        "prices": [{"provider": "dashscope", "model": "qwen-long", "input": "0.0005"}]})
    assert r.status_code == 200 and r.json()["version"] == 2
    now = (await client.get("/admin/prices", headers=AUTH)).json()
    assert now["version"] == 1 and now["scheduled"] == [{"version": 2, "effective_from": at.isoformat()}]


@pytest.mark.parametrize(("entry", "param"), [
    ({"provider": "dashscope", "model": "qwen-max", "input": "1"}, "prices[0].model"),
    ({"provider": "dashscope", "model": "qwen-long", "input": "-1"}, "prices[0].input"),
    ({"provider": "dashscope", "model": "qwen-long", "currency": "RMB"}, "prices[0].currency"),
    ({"provider": "dashscope", "model": "qwen-plus", "tiers": [
        {"up_to": "128K", "input": "2.4", "output": "20"}, {"up_to": "32K", "input": "0.8", "output": "2"}]},
     "prices[0].tiers"),
])
async def test_put_validation_errors_name_the_field(client: httpx.AsyncClient, entry: dict, param: str) -> None:
    r = await client.put("/admin/prices", headers=AUTH, json={"prices": [entry]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"] and err["type"] == "invalid_request_error"
    assert (await client.get("/admin/prices", headers=AUTH)).json()["version"] == 1  # nothing stored


async def test_put_refuses_bad_json_and_bad_times(client: httpx.AsyncClient) -> None:
    assert (await client.put("/admin/prices", headers=AUTH, content=b"{nope")).status_code == 400
    r = await client.put("/admin/prices", headers=AUTH, json={"prices": [], "effective_from": "tomorrow"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "effective_from"


async def test_history_lists_every_version_of_a_deployments_price(client: httpx.AsyncClient) -> None:
    for value in ("0.01", "0.005"):
        await client.put("/admin/prices", headers=AUTH,
                         json={"prices": [{"provider": "dashscope", "model": "qwen-long", "input": value}]})
    await client.put("/admin/prices", headers=AUTH,
                     json={"prices": [{"provider": "deepseek", "model": "deepseek-v2", "input": "0.002"}]})
    r = await client.get("/admin/prices/history", headers=AUTH, params={"provider": "dashscope", "model": "qwen-long"})
    assert r.status_code == 200
    rows = r.json()["versions"]
    assert [(x["version"], x["input"], x["changed"]) for x in rows] == [
        (1, "0.02", True), (2, "0.01", True), (3, "0.005", True), (4, "0.005", False)]
    r = await client.get("/admin/prices/history", headers=AUTH, params={"provider": "dashscope", "model": "nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


async def test_put_sets_cache_write_and_get_and_history_show_it(client: httpx.AsyncClient) -> None:
    r = await client.put("/admin/prices", headers=AUTH, content=b'{"prices": [{"provider": "anthropic", '
                         b'"model": "claude-sonnet-4-5", "cache_write": 3.75, "cached_input": "0.3"}]}')
    assert r.status_code == 200, r.text
    assert {(c["field"], c["old"], c["new"]) for c in r.json()["changed"]} == {
        ("cache_write", None, "3.75"), ("cached_input", None, "0.3")}
    claude = next(p for p in (await client.get("/admin/prices", headers=AUTH)).json()["prices"]
                  if p["model"] == "claude-sonnet-4-5")
    assert (claude["input"], claude["cached_input"], claude["cache_write"]) == ("3", "0.3", "3.75")
    r = await client.put("/admin/prices", headers=AUTH, json={"prices": [
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "cache_write": "-1"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prices[0].cache_write"
    r = await client.get("/admin/prices/history", headers=AUTH,
                         params={"provider": "anthropic", "model": "claude-sonnet-4-5"})
    assert [(x["version"], x.get("cache_write")) for x in r.json()["versions"]] == [(1, None), (2, "3.75")]
