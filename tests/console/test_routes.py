"""Console routes over real HTTP (an in-process `gateway serve`): sign-in, CSRF on every write, redirects,
escaping, and the admin key never echoed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gateway.config.load import load_config_data, parse_yaml_text
from tests.e2e.conftest import GatewayThread

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
ADMIN = "route-test-admin-key"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    data = parse_yaml_text(DEMO.read_text())
    data["gateway"]["admin_key"] = ADMIN
    ledger = tmp_path_factory.mktemp("console-routes") / "ledger.db"
    config = load_config_data(data, "test", env={"GATEWAY_LEDGER_URL": f"sqlite:///{ledger}"})
    with GatewayThread(config) as gw:
        yield gw


@pytest.fixture()
def signed_in(gateway: GatewayThread) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=gateway.url) as client:
        r = client.post("/console/login", data={"admin_key": ADMIN, "next": "/console/keys"})
        assert r.status_code == 303 and r.headers["location"] == "/console/keys"
        page = client.get("/console/keys").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        yield client, csrf


def test_a_wrong_admin_key_is_refused_and_never_echoed(gateway: GatewayThread) -> None:
    r = httpx.post(gateway.url + "/console/login", data={"admin_key": "wrong<b>guess"})
    assert r.status_code == 401 and "not the admin key" in r.text
    assert "wrong" not in r.text and "gw_console" not in r.headers.get("set-cookie", "")
    ok = httpx.post(gateway.url + "/console/login", data={"admin_key": ADMIN})
    assert ADMIN not in ok.text and ADMIN not in ok.headers.get("location", "")


def test_writes_without_the_sessions_csrf_token_are_refused(signed_in: tuple[httpx.Client, str]) -> None:
    client, csrf = signed_in
    for token in (None, "", "forged", csrf[:-1] + ("A" if csrf[-1] != "A" else "B")):
        data = {"team": "csrf-victim"} | ({"csrf": token} if token is not None else {})
        assert client.post("/console/keys/create", data=data).status_code == 403
    keys = client.get("/console/keys").text
    assert "csrf-victim" not in keys  # nothing was created
    created = client.post("/console/keys/create", data={"team": "csrf-ok", "csrf": csrf})
    assert created.status_code == 200 and "csrf-ok" in created.text
    header = client.post("/console/teams/set", data={"team": "csrf-ok", "budget": "3", "budget_period": "month"},
                         headers={"X-CSRF-Token": csrf})
    assert header.status_code == 200


def test_sign_in_redirects_only_to_console_pages(gateway: GatewayThread) -> None:
    for target in ("https://evil.example/", "//evil.example/console", "/console\\@evil", "/admin/keys"):
        r = httpx.post(gateway.url + "/console/login", data={"admin_key": ADMIN, "next": target})
        assert r.headers["location"] == "/console/spend", target


def test_pages_forbid_inline_scripts_and_escape_echoed_input(signed_in: tuple[httpx.Client, str]) -> None:
    client, csrf = signed_in
    r = client.post("/console/playground", data={"csrf": csrf, "mode": "paste",
                                                 "body": '{"model": "<img src=x onerror=alert(1)>"}'})
    assert r.status_code == 400
    assert "<img src=x" not in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


def test_sign_out_ends_the_session_in_the_browser(signed_in: tuple[httpx.Client, str]) -> None:
    client, csrf = signed_in
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/console/spend", headers={"accept": "text/html"}).status_code == 303


def test_spend_page_filters_and_downloads_use_the_report_functions(signed_in: tuple[httpx.Client, str],
                                                                   gateway: GatewayThread) -> None:
    client, _ = signed_in
    bad = client.get("/console/spend?group_by=nonsense")
    assert bad.status_code == 200 and "unknown column" in bad.text
    csv_text = client.get("/console/spend.csv?from=2026-01-01&to=2026-02-01&group_by=team").text
    admin = httpx.get(gateway.url + "/admin/reports/spend?from=2026-01-01&to=2026-02-01&group_by=team&format=csv",
                      headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert csv_text == admin


