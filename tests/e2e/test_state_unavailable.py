"""When budgets or rate limits cannot be reached, a request is refused before any vendor is called."""

from __future__ import annotations

from typing import Any

import httpx


class _Unreachable:
    async def reserve(self, *args: Any) -> Any:
        raise ConnectionError("redis went away")

    async def settle(self, *args: Any) -> None:
        raise AssertionError("nothing was reserved, nothing to settle")

    async def check(self, *args: Any) -> None:
        raise ConnectionError("redis went away")


def test_unreachable_budget_store_gives_503_and_no_vendor_call(gateway, fresh_vendors):
    gateway.services.budgets = _Unreachable()
    resp = httpx.post(gateway.url + "/v1/chat/completions",
                      json={"model": "deepseek-v2", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "state_unavailable"
    assert "redis went away" not in resp.text  # the cause goes to the log, not to the client
    assert fresh_vendors.stats("deepseek")["requests"] == 0


def test_unreachable_rate_limiter_gives_503_and_no_vendor_call(gateway, fresh_vendors):
    gateway.services.ratelimit = _Unreachable()
    resp = httpx.post(gateway.url + "/v1/chat/completions",
                      json={"model": "deepseek-v2", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 503
    assert fresh_vendors.stats("deepseek")["requests"] == 0
