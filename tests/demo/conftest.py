"""One cluster of simulated vendors (the demo config's six plus a Moonshot) for the tests of this package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.demo.vendors import VendorCluster, VendorClusterThread, moonshot_spec, specs_from_config

CHAT_MODEL = {
    "volcengine": "ep-20240515-doubao-pro-32k",
    "dashscope": "qwen-long",
    "qianfan": "ernie-speed-128k",
    "zhipu": "glm-3-turbo",
    "deepseek": "deepseek-chat",
    "hunyuan": "hunyuan-standard",
    "moonshot": "moonshot-v1-8k",
}


class Vendors:
    """Requests to the simulated vendors with each one's own key and chat model."""

    def __init__(self, client: httpx.Client, cluster: VendorCluster) -> None:
        self.client = client
        self.cluster = cluster

    @staticmethod
    def auth(provider: str, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or f'demo-{provider}-key'}"}

    def chat(self, provider: str, content: str = "hello", headers: dict[str, str] | None = None,
             **extra: Any) -> httpx.Response:
        body = {"model": CHAT_MODEL[provider], "messages": [{"role": "user", "content": content}], **extra}
        url = f"{self.cluster.urls[provider]}/chat/completions"
        return self.client.post(url, json=body, headers=self.auth(provider) if headers is None else headers)

    def stream_events(self, provider: str, include_usage: bool | None = None,
                      **extra: Any) -> tuple[list[dict[str, Any]], list[str]]:
        """(parsed data events, raw lines) of one streamed chat completion; asserts it ends with [DONE]."""
        body: dict[str, Any] = {"model": CHAT_MODEL[provider], "messages": [{"role": "user", "content": "hi"}],
                                "stream": True, **extra}
        if include_usage is not None:
            body["stream_options"] = {"include_usage": include_usage}
        url = f"{self.cluster.urls[provider]}/chat/completions"
        with self.client.stream("POST", url, json=body, headers=self.auth(provider)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = list(r.iter_lines())
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        return [orjson.loads(d) for d in data[:-1]], lines


@pytest.fixture(scope="session")
def cluster() -> Iterator[VendorCluster]:
    with VendorClusterThread(specs_from_config() + [moonshot_spec()]) as c:
        yield c


@pytest.fixture(scope="session")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


@pytest.fixture
def v(client: httpx.Client, cluster: VendorCluster) -> Vendors:
    cluster.reset()  # every test starts with mode ok, zero counters and an empty prompt cache
    return Vendors(client, cluster)
