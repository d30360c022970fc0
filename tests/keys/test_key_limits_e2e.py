"""Limits and budgets of any sane size through a real gateway on PostgreSQL (issue 15): `tpm: 100000000000` used
to fail the 32-bit column with an unhandled exception, budgets above ~9 million were refused; out-of-range values
get a 400 naming the field."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from tests.e2e.conftest import GatewayThread
from tests.faults.conftest import MODEL, faults_config
from tests.faults.vendor import LoopbackVendor

ADMIN = {"authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def gateway(pg_url: str) -> Iterator[GatewayThread]:
    def edit(data: dict[str, Any]) -> None:
        data["gateway"].update(ledger_url=pg_url, require_api_key=True)

    with LoopbackVendor() as vendor, GatewayThread(faults_config(vendor.url, vendor.url, edit=edit)) as gw:
        yield gw


def test_a_key_with_a_tpm_beyond_32_bits_is_stored_and_serves(gateway: GatewayThread) -> None:
    r = httpx.post(gateway.url + "/admin/keys", headers=ADMIN,
                   json={"team": "big", "rpm": 5_000_000_000, "tpm": 100_000_000_000,
                         "budget": "12000000000.5", "budget_period": "month"})
    assert r.status_code == 201, r.text
    created = r.json()
    listed = {k["id"]: k for k in httpx.get(gateway.url + "/admin/keys", headers=ADMIN).json()["data"]}
    assert (listed[created["id"]]["tpm"], listed[created["id"]]["rpm"]) == (100_000_000_000, 5_000_000_000)
    assert listed[created["id"]]["budget"] == "12000000000.5"
    chat = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {created['key']}"},
                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
    assert chat.status_code == 200, chat.text


def test_a_team_budget_above_nine_million_is_accepted_exactly(gateway: GatewayThread) -> None:
    r = httpx.put(gateway.url + "/admin/teams/finance", headers=ADMIN,
                  json={"budget": "9007199.254740993", "budget_period": "day"})
    assert r.status_code == 200, r.text
    assert r.json()["budget"] == "9007199.254740993"


@pytest.mark.parametrize(("field", "value"), [("tpm", 2**63), ("rpm", 10**30), ("tpm", 0), ("rpm", "60"),
                                              ("tpm", 1.5), ("budget", "1e40")])
def test_out_of_range_limits_are_a_400_naming_the_field(gateway: GatewayThread, field: str, value: Any) -> None:
    body: dict[str, Any] = {"team": "t", field: value}
    if field == "budget":
        body["budget_period"] = "month"
    r = httpx.post(gateway.url + "/admin/keys", headers=ADMIN, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
