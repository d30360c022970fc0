"""A price feed served by a real HTTP server on loopback: it changes, then fails."""

from __future__ import annotations

import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from gateway.metrics import Metrics
from gateway.prices.feeds import PriceFeeds, feed_label
from gateway.prices.store import PriceStore
from tests.prices.conftest import T0, Clock, make_config


class FeedServer:
    """Serves `body` at any path with `status`; both settable while it runs."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests.append(self.headers.get("Authorization", ""))
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as s:
        yield s


def _openrouter(deepseek_prompt: str) -> bytes:
    return ('{"data": [{"id": "deepseek/deepseek-chat", "context_length": 32000, "pricing": {"prompt": "'
            + deepseek_prompt + '", "completion": "0.0000011"}}]}').encode()


def test_the_feed_label_carries_no_credentials_or_query() -> None:
    assert feed_label("https://user:secret@prices.example:8443/v1/models?api_key=abc#x") == \
        "https://prices.example:8443/v1/models"


async def test_a_feed_that_changes_then_fails(server: FeedServer, sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    url = f"http://feeduser:feedpass@127.0.0.1:{server.port}/api/v1/models?key=s3cret"
    label = f"http://127.0.0.1:{server.port}/api/v1/models"
    config = make_config(f"""price_feeds:
  - {{url: "{url}", format: openrouter, interval_s: 60}}
""")
    metrics = Metrics()
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    now = [1_700_000_000.0]
    feeds = PriceFeeds(config, store, metrics, clock=lambda: now[0])
    feed = config.price_feeds[0]

    def freshness() -> float | None:
        return metrics.registry.get_sample_value("gateway_price_feed_last_success_timestamp_seconds",
                                                 {"feed": label})

    try:
        server.body = _openrouter("0.00000027")
        first = await feeds.poll(feed)
        assert first is not None and first.version is not None and first.version.version == 2
        assert store.book.current(T0).prices[("deepseek", "deepseek-v2")].input == Decimal("0.27")
        assert freshness() == now[0]
        assert server.requests[-1].startswith("Basic ")  # credentials in the URL go as basic auth

        now[0] += 60
        same = await feeds.poll(feed)  # unchanged: no new version, but the feed is fresh
        assert same is not None and same.versions == ()
        assert store.book.latest_number() == 2 and freshness() == now[0]

        now[0] += 60
        server.body = _openrouter("0.00000014")
        changed = await feeds.poll(feed)
        assert changed is not None and changed.version is not None and changed.version.version == 3
        assert store.book.current(T0).prices[("deepseek", "deepseek-v2")].input == Decimal("0.14")
        fresh_at = now[0]

        for status, body in ((500, b"oops"), (200, b"{not json"), (200, b'{"data": "nope"}')):
            now[0] += 60
            server.status, server.body = status, body
            assert await feeds.poll(feed) is None
        assert feeds.status[url].failures == 3
        assert store.book.latest_number() == 3  # the last good prices stay in force
        assert store.book.current(T0).prices[("deepseek", "deepseek-v2")].input == Decimal("0.14")
        assert freshness() == fresh_at  # not advanced by failures: the staleness alert can fire

        server.httpd.shutdown()  # the server goes away entirely
        server.httpd.server_close()
        assert await feeds.poll(feed) is None
        assert feeds.status[url].last_error in ("connect", "timeout")
        assert freshness() == fresh_at
    finally:
        await feeds.stop()


async def test_failures_are_logged_without_credentials(server: FeedServer, sqlite_engine, clock: Clock,  # type: ignore[no-untyped-def]
                                                       caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://u:hunter2@127.0.0.1:{server.port}/p.json?token=t0ps3cret"
    config = make_config(f"price_feeds:\n  - {{url: \"{url}\", format: gateway, interval_s: 60}}\n")
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    feeds = PriceFeeds(config, store, Metrics())
    server.status, server.body = 503, b"down"
    try:
        assert await feeds.poll(config.price_feeds[0]) is None
    finally:
        await feeds.stop()
    text = caplog.text
    assert "http_503" in text and "hunter2" not in text and "t0ps3cret" not in text


async def test_started_feeds_poll_in_the_background(server: FeedServer, sqlite_engine, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{server.port}/prices.json"
    config = make_config(f"price_feeds:\n  - {{url: \"{url}\", format: gateway, interval_s: 0.05}}\n")
    store = PriceStore(sqlite_engine, config, clock=clock)
    await store.start(follow=False)
    server.body = b'{"prices": [{"provider": "dashscope", "model": "qwen-long", "input": "0.0005"}]}'
    feeds = PriceFeeds(config, store, Metrics())
    await feeds.start()
    try:
        import asyncio

        for _ in range(200):
            if store.book.latest_number() == 2 and len(server.requests) >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await feeds.stop()
    assert store.book.latest_number() == 2  # polled repeatedly, one version
    assert len(server.requests) >= 3
