"""`GET /admin/reports/spend`: admin only, CSV and JSON agreeing with the CLI's report, 400 on bad arguments."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from types import SimpleNamespace

import httpx
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.load import load_config_data, parse_yaml_text
from gateway.errors import GatewayError
from gateway.http.admin_reports import router
from gateway.http.errors import error_response
from gateway.prices.book import PriceBook, version_from_config
from tests.ledger.conftest import T0, insert_rows, row

CONFIG = """
gateway: {reporting_currency: CNY, admin_key: sekret}
fx_rates: {USD: 8}
providers: {volcengine: {api_base: "http://127.0.0.1:1/v1"}}
deployments:
  - {provider: volcengine, model: doubao-pro-32k, context_window: 32K, quality: 82,
     price: {currency: CNY, per: 1K, input: 0.0008, output: 0.002}}
"""


def make_app(engine: AsyncEngine) -> FastAPI:
    config = load_config_data(parse_yaml_text(CONFIG), "test.yaml", env={})
    app = FastAPI()
    app.state.services = SimpleNamespace(config=config, engine=engine, price_store=None,
                                         price_book=PriceBook([version_from_config(config)]))

    @app.exception_handler(GatewayError)
    async def _errors(request: Request, exc: GatewayError):  # type: ignore[no-untyped-def]
        return error_response(exc)

    app.include_router(router)
    return app


async def test_spend_report_over_http(engine: AsyncEngine) -> None:
    await insert_rows(engine, [row(f"r{i}", T0 + timedelta(hours=i), team=f"t{i % 2}", costs=("0.4", "0", "0.4"))
                               for i in range(4)])
    auth = {"Authorization": "Bearer sekret"}
    url = "/admin/reports/spend?from=2026-11-01&to=2026-11-02&group_by=team"
    transport = httpx.ASGITransport(app=make_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get(url)).status_code == 401
        as_json = (await client.get(url, headers=auth)).json()
        as_csv = await client.get(url + "&format=csv", headers=auth)
        in_usd = (await client.get(url + "&currency=USD", headers=auth)).json()
        bad = await client.get("/admin/reports/spend?from=2026-11-01&to=2026-11-02&group_by=vendor", headers=auth)
    assert as_json["group_by"] == ["team"] and as_json["total"]["total_cost"] == "3.2"
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["team"], r["total_cost"]) for r in rows] == [(r["team"], r["total_cost"]) for r in as_json["rows"]]
    assert in_usd["currency"] == "USD" and in_usd["total"]["total_cost"] == "0.4"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
