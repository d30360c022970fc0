"""The raw ASGI endpoint of the hot routes: what it leaves behind in the server's scope."""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import Any

from starlette.responses import Response

from gateway.http.openai_routes import hot_post
from gateway.server import GC_GEN0_THRESHOLD, tune_gc
from gateway.streaming import SERVER_SEND


class FakeCycle:
    """Like uvicorn's RequestResponseCycle: it holds the scope, and `send` is its bound method."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                                      "headers": [(b"content-type", b"application/json")]}
        self.disconnected = False
        self.sent: list[dict[str, Any]] = []
        self.send_in_scope_during_request = False

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def fake_app(cycle: FakeCycle) -> Any:
    async def handle(api: str, raw: bytes, headers: Any) -> Response:
        cycle.send_in_scope_during_request = cycle.scope.get(SERVER_SEND) == cycle.send
        return Response(b"{}", media_type="application/json")

    services = SimpleNamespace(config=SimpleNamespace(gateway=SimpleNamespace(max_body_bytes=1 << 20)))
    return SimpleNamespace(state=SimpleNamespace(services=services, pipeline=SimpleNamespace(handle=handle)))


async def test_the_servers_send_is_in_the_scope_during_the_request_and_gone_after_it() -> None:
    cycle = FakeCycle()
    await hot_post(fake_app(cycle), "chat", cycle.scope, cycle.receive, cycle.send)
    assert cycle.send_in_scope_during_request  # what a stream's relay reads the disconnect flag through
    assert SERVER_SEND not in cycle.scope  # else scope -> bound method -> cycle -> scope: garbage for the GC
    assert [m["type"] for m in cycle.sent] == ["http.response.start", "http.response.body"]


async def test_a_request_through_the_hot_route_leaves_no_reference_cycle() -> None:
    cycle = FakeCycle()
    await hot_post(fake_app(cycle), "chat", cycle.scope, cycle.receive, cycle.send)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        del cycle
        found = gc.collect()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert found == 0


def test_tune_gc_raises_the_youngest_generations_threshold_and_freezes_start_up_objects() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
