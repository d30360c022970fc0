"""tpm counts the tokens a request actually used (issue 15): a key with tpm 500 whose requests each use 400 tokens
(300 in, 100 out, as the vendor reports) gets one through, however small the admission estimate was; in process
and on Redis alike.

The estimate here is 238 tokens (an 8-token prompt + max_tokens 230): counted by estimate, two requests fit in 500;
counted by use, the second finds 100 left and waits ~17 s for the bucket to refill to 238, far longer than the
test takes even on a loaded machine."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.e2e.conftest import GatewayThread
from tests.faults.conftest import MODEL, faults_config
from tests.faults.conftest import vendor  # noqa: F401 - the loopback vendor fixture
from tests.faults.vendor import COMPLETION_TOKENS, PROMPT_TOKENS, LoopbackVendor

ADMIN = {"authorization": "Bearer admin-secret"}


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
def test_tpm_is_charged_with_the_tokens_the_vendor_reported(vendor: LoopbackVendor, redis_prefix: str,
                                                            shared: bool) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["gateway"]["require_api_key"] = True
        if shared:
            data["gateway"].update(redis_url=REDIS_URL, redis_prefix=redis_prefix)

    with GatewayThread(faults_config(vendor.url, vendor.url, edit=edit)) as gw:
        created = httpx.post(gw.url + "/admin/keys", json={"team": "t", "tpm": 500}, headers=ADMIN)
        assert created.status_code == 201, created.text
        auth = {"authorization": f"Bearer {created.json()['key']}"}
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 230}
        before = vendor.requests
        statuses = [httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth).status_code
                    for _ in range(4)]
        assert statuses == [200, 429, 429, 429]
        assert vendor.requests - before == 1
        assert PROMPT_TOKENS + COMPLETION_TOKENS == 400
