"""Every error in the contract's format, always (issue 15): unknown paths and methods, and an unexpected internal
failure on every route (the raw ASGI hot path and the admin routes included) answer
`{"error": {"message", "type", "param", "code"}}`, never `{"detail": ...}` or plain text, and never the text of
the exception."""

from __future__ import annotations

import re
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import GatewayThread
from tests.faults.conftest import MODEL, faults_config
from tests.faults.vendor import LoopbackVendor

ADMIN = {"authorization": "Bearer admin-secret"}
SECRET = "sk-live-very-secret-token"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    with LoopbackVendor() as vendor, GatewayThread(faults_config(vendor.url, vendor.url)) as gw:
        yield gw


def assert_openai_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("POST", "/v1/chat"), ("GET", "/v1/models/x/y"),
                                              ("PUT", "/admin/nothing"), ("GET", "/v1/%2e%2e/admin/keys")])
def test_an_unknown_path_is_a_404_in_the_openai_format(gateway: GatewayThread, method: str, path: str) -> None:
    error = assert_openai_error(httpx.request(method, gateway.url + path, headers=ADMIN), 404, "not_found")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("method", "path", "allowed"), [("GET", "/v1/chat/completions", "POST"),
                                                         ("DELETE", "/v1/embeddings", "POST"),
                                                         ("POST", "/v1/models", "GET"),
                                                         ("PATCH", "/admin/prices", "GET, PUT")])
def test_a_wrong_method_is_a_405_with_allow_in_the_openai_format(gateway: GatewayThread, method: str, path: str,
                                                                  allowed: str) -> None:
    r = httpx.request(method, gateway.url + path, headers=ADMIN)
    assert_openai_error(r, 405, "method_not_allowed")
    assert sorted(a.strip() for a in r.headers["allow"].split(",")) == sorted(allowed.split(", "))


def test_the_openai_sdk_reads_a_404_as_its_not_found_error(gateway: GatewayThread) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1/nowhere", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "not_found"


class _Broken:
    """Stands in for the app's services: any use raises an exception carrying a secret."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"internal failure holding {SECRET}")


def _routes(gw: GatewayThread) -> list[tuple[str, str]]:
    """Every (method, path) of the API's OpenAPI schema, path parameters filled in (not the web console's HTML
    pages, which answer a browser with pages of their own)."""
    return [(method.upper(), re.sub(r"\{[^}]+\}", "x", path))
            for path, operations in gw.app.openapi()["paths"].items() for method in operations
            if not path.startswith("/console")]


def test_an_internal_failure_on_every_route_is_a_500_internal_error_without_its_text(
        gateway: GatewayThread) -> None:
    state = gateway.app.state
    services, pipeline = state.services, state.pipeline
    routes = _routes(gateway)
    assert {("POST", "/v1/chat/completions"), ("POST", "/v1/messages"), ("POST", "/admin/keys")} <= set(routes)
    state.services = _Broken()
    state.pipeline = _Broken()
    try:
        failed = []
        for method, path in routes:
            r = httpx.request(method, gateway.url + path, headers=ADMIN, json={"team": "t"})
            if path == "/healthz":  # touches nothing that can break
                assert r.status_code == 200
                continue
            assert SECRET not in r.text
            if path.startswith("/v1/messages"):  # Anthropic's shape on its own API
                assert r.status_code == 500 and r.json() == {"type": "error", "error": {
                    "type": "api_error", "message": "internal gateway error"}}
            else:
                assert assert_openai_error(r, 500, "internal_error")["type"] == "server_error"
            failed.append(path)
        assert len(failed) >= 12
    finally:
        state.services, state.pipeline = services, pipeline


def test_framework_errors_on_the_messages_api_are_in_anthropics_shape(gateway: GatewayThread) -> None:
    r = httpx.get(gateway.url + "/v1/messages")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(gateway.url + "/v1/messages/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_an_internal_failure_in_the_pipeline_reaches_the_sdk_as_a_500(gateway: GatewayThread) -> None:
    state = gateway.app.state
    pipeline = state.pipeline

    async def boom(api: str, raw: bytes, headers: Any) -> Any:
        raise RuntimeError(f"internal failure holding {SECRET}")

    state.pipeline = type("P", (), {"handle": staticmethod(boom)})()
    try:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 500 and SECRET not in str(caught.value.body)
        r = httpx.post(gateway.url + "/v1/embeddings", json={"model": MODEL, "input": "x"})
        assert_openai_error(r, 500, "internal_error")
    finally:
        state.pipeline = pipeline


def test_a_missing_required_parameter_is_a_400_naming_it_not_fastapis_422(gateway: GatewayThread) -> None:
    r = httpx.get(gateway.url + "/admin/reports/spend", params={"to": "2024-06-01"}, headers=ADMIN)
    error = assert_openai_error(r, 400, "invalid_request")
    assert error["param"] == "from"
    assert "detail" not in r.text
