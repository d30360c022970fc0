"""When budgets or rate limits cannot be reached, a request is refused before any vendor is called."""

from __future__ import annotations

from typing import Any

import httpx


class _Unreachable:
    """An admission (rate limits + budget reservation, gateway/limits/admission.py) whose store is gone."""

    def __init__(self, *, rate_limited: bool, budgeted: bool) -> None:
        self.rate_limited = lambda identity: rate_limited
        self.budgeted = lambda identity: budgeted

    async def admit(self, *args: Any) -> Any:
        raise ConnectionError("redis went away")


def test_unreachable_budget_store_gives_503_and_no_vendor_call(gateway, fresh_vendors):
    gateway.services.admission = _Unreachable(rate_limited=False, budgeted=True)
    resp = httpx.post(gateway.url + "/v1/chat/completions",
                      json={"model": "deepseek-v2", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "state_unavailable"
    assert "redis went away" not in resp.text  # the cause goes to the log, not to the client
    assert fresh_vendors.stats("deepseek")["requests"] == 0


def test_unreachable_rate_limiter_gives_503_and_no_vendor_call(gateway, fresh_vendors):
    gateway.services.admission = _Unreachable(rate_limited=True, budgeted=False)
    resp = httpx.post(gateway.url + "/v1/chat/completions",
                      json={"model": "deepseek-v2", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 503
    assert fresh_vendors.stats("deepseek")["requests"] == 0
