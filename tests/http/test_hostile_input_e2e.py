"""Hostile input through a real `gateway serve` (issue 15): each is a 4xx in the OpenAI format, nothing reaches
the vendor, nothing is written to the ledger. The OpenAI SDK is the client where it can send the input at all;
raw HTTP (or a raw socket) where the SDK would refuse to."""

from __future__ import annotations

import socket
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import GatewayThread, ledger_rows
from tests.faults.conftest import MODEL, faults_config
from tests.faults.vendor import LoopbackVendor

ADMIN = {"authorization": "Bearer admin-secret"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def vendor_and_gateway() -> Iterator[tuple[LoopbackVendor, GatewayThread]]:
    with LoopbackVendor() as vendor, GatewayThread(faults_config(vendor.url, vendor.url)) as gw:
        yield vendor, gw


@pytest.fixture()
def gw(vendor_and_gateway: tuple[LoopbackVendor, GatewayThread]) -> Iterator[GatewayThread]:
    """The gateway; after the test, the vendor received nothing and the ledger holds no row."""
    vendor, gateway = vendor_and_gateway
    before = vendor.requests
    yield gateway
    assert vendor.requests == before, "hostile input reached the vendor"
    assert ledger_rows(gateway, timeout_s=0) == [], "hostile input was written to the ledger"


def sdk(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-app", max_retries=0)


def assert_error(status: int, body: Any, code: str | None = None) -> None:
    error = body.get("error", body) if isinstance(body, dict) else None  # the SDK hands over the inner object
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
    if code is not None:
        assert error["code"] == code


SDK_CASES = [
    ("wrong-type-temperature", {"messages": HI, "temperature": "hot"}, "temperature"),
    ("message-without-role", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("top-p-out-of-range", {"messages": HI, "top_p": 7}, "top_p"),
    ("n-zero", {"messages": HI, "n": 0}, "n"),
    ("stop-five-strings", {"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("tool-without-name", {"messages": HI, "tools": [{"type": "function", "function": {"parameters": {}}}]},
     "tools[0].function.name"),
    ("bad-content-part", {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type"),
    ("tool-call-id-missing", {"messages": [*HI, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
]


@pytest.mark.parametrize(("kwargs", "param"), [c[1:] for c in SDK_CASES], ids=[c[0] for c in SDK_CASES])
def test_wrong_types_and_ranges_are_a_400_naming_the_field(gw: GatewayThread, kwargs: dict[str, Any],
                                                           param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(model=MODEL, **kwargs)
    assert_error(400, caught.value.body, "invalid_request")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_embeddings_with_a_wrong_input_shape_are_a_400(gw: GatewayThread) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).embeddings.create(model=MODEL, input=[["a"]])  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input[0]"


@pytest.mark.parametrize("model", ["../../admin/keys", "loop-1/../loop-1", "loop\u20111", "ｌｏｏｐ-1", "loop-1\u200b",
                                   "loop-1%00", "\u202eloop-1", "x" * 300])
def test_model_names_with_path_or_unicode_tricks_match_nothing(gw: GatewayThread, model: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gw).chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code in (400, 404)
    assert_error(caught.value.status_code, caught.value.body)


RAW_BODIES = [
    ("nan", b'{"model": "loop-1", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
    ("infinity", b'{"model": "loop-1", "messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}'),
    ("huge-exponent", b'{"model": "loop-1", "messages": [{"role": "user", "content": "hi"}], "seed": 1e999}'),
    ("invalid-utf8", b'{"model": "loop-1", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    ("lone-surrogate", b'{"model": "loop-1", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("deep-nesting-1000", b'{"model": "loop-1", "messages": [{"role": "user", "content": "hi"}], "x": '
     + b"[" * 1000 + b"]" * 1000 + b"}"),
    ("deep-nesting-200", b'{"model": "loop-1", "messages": [{"role": "user", "content": "hi"}], "x": '
     + b"[" * 200 + b"]" * 200 + b"}"),
    ("deep-message", b'{"model": "loop-1", "messages": [{"role": "user", "content": "hi", "meta": '
     + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}]}"),
    ("not-an-object", b'["model", "loop-1"]'),
    ("truncated", b'{"model": "loop-1", "messages": [{"role": "user", "cont'),
]


@pytest.mark.parametrize("raw", [c[1] for c in RAW_BODIES], ids=[c[0] for c in RAW_BODIES])
def test_bodies_no_sdk_would_send_are_a_400(gw: GatewayThread, raw: bytes) -> None:
    for path in ("/v1/chat/completions", "/v1/embeddings"):
        r = httpx.post(gw.url + path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert_error(400, r.json(), "invalid_request")


def test_oversized_headers_are_a_431_in_the_openai_format(gw: GatewayThread) -> None:
    body = {"model": MODEL, "messages": HI}
    for headers in ({"x-big": "a" * 100_000}, {f"x-h{i}": "v" for i in range(300)}):
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 431
        assert_error(431, r.json(), "request_header_fields_too_large")


def test_a_request_the_server_cannot_parse_is_a_400_in_the_openai_format(gw: GatewayThread) -> None:
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nNot A Header\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head
    assert_error(400, httpx.Response(400, content=body).json(), "invalid_request")


@pytest.mark.parametrize("token", ["' OR '1'='1", "x'; DROP TABLE api_keys; --", "gw-abc' UNION SELECT * --",
                                   "gw-\\x00\\x01", "%27%20OR%201=1"])
def test_sql_metacharacters_in_keys_change_nothing(gw: GatewayThread, token: str) -> None:
    r = httpx.get(gw.url + "/admin/keys", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert_error(401, r.json(), "invalid_api_key")
    r = httpx.delete(gw.url + "/admin/keys/" + httpx.URL(token).raw_path.decode(errors="replace").lstrip("/"),
                     headers=ADMIN)
    assert r.status_code in (400, 404)
    assert_error(r.status_code, r.json())
    r = httpx.put(gw.url + "/admin/teams/x", headers=ADMIN, json={"budget": token, "budget_period": "day"})
    assert r.status_code == 400
    r = httpx.post(gw.url + "/admin/keys", headers=ADMIN, json={"team": token})
    assert r.status_code == 400 and r.json()["error"]["param"] == "team"
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json()["data"] == []  # nothing created, nothing lost


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "admin.internal", "evil.example:443", "",
                                  "[::1]", "localhost:1@evil.example"])
def test_the_host_header_grants_nothing_on_the_admin_routes(gw: GatewayThread, host: str) -> None:
    for path in ("/admin/keys", "/admin/prices", "/admin/teams"):
        headers = {"host": host, "x-forwarded-for": "127.0.0.1", "x-forwarded-host": "localhost",
                   "x-real-ip": "127.0.0.1", "forwarded": "for=127.0.0.1;host=localhost"}
        r = httpx.get(gw.url + path, headers=headers)
        assert r.status_code == 401
        assert_error(401, r.json(), "invalid_api_key")
