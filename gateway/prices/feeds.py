"""Price feeds: each configured URL polled on its interval; a changed table becomes a new price version.

A poll that fails (network, HTTP status, unparsable or invalid file) changes nothing: the last good prices stay
in force, the failure is counted and logged (with the feed's URL stripped of credentials and query, and the
error's kind rather than its text, which could echo the URL). A successful poll sets
`gateway_price_feed_last_success_timestamp_seconds{feed=...}` even when nothing changed, so the freshness alert
measures the feed, not the vendor's pricing activity. A poll that changes nothing makes no version; several
replicas polling one feed make one version between them (the store rebuilds on the newer table on a clash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit, urlunsplit

from gateway.config.schema import Config, PriceFeedConfig
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.prices.changes import apply_import
from gateway.prices.formats import parse
from gateway.prices.store import PriceStore, Published

if TYPE_CHECKING:  # httpx is imported when a feed is first polled: it costs start-up ~0.1 s (it imports rich)
    import httpx

log = logging.getLogger(__name__)


def feed_label(url: str) -> str:
    """The feed's URL without user, password, query or fragment: safe for logs and metric labels."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class FeedStatus:
    label: str
    successes: int = 0
    failures: int = 0
    last_error: str | None = None  # the kind of the last failure (no text that could carry the URL)
    last_success: float | None = None  # unix time
    last_version: int | None = None  # the last version this feed made


class PriceFeeds:
    def __init__(self, config: Config, store: PriceStore, metrics: Metrics, *,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time,
                 timeout_s: float = 30.0) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._own_client = client is None
        self._client_or_none = client
        self._timeout_s = timeout_s
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self.status: dict[str, FeedStatus] = {f.url: FeedStatus(feed_label(f.url)) for f in config.price_feeds}

    async def poll(self, feed: PriceFeedConfig) -> Published | None:
        """Fetch one feed once; the published result, or None when the poll failed."""
        status = self.status.setdefault(feed.url, FeedStatus(feed_label(feed.url)))
        try:
            response = await self._client().get(feed.url)  # credentials in the URL are sent as basic auth
            if response.status_code != 200:
                raise _FeedFailure(f"http_{response.status_code}")
            file = parse(response.text, feed.format)
            published = await self._store.publish(
                lambda base, at: apply_import(base, file, self._config, at),
                file.effective_from, source=f"feed:{status.label}")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            status.failures += 1
            status.last_error = _kind(e)
            log.warning("price feed %s failed (%s); keeping the last good prices (%d failures)",
                        status.label, status.last_error, status.failures)
            return None
        status.successes += 1
        status.last_success = self._clock()
        self._metrics.feed_last_success.labels(status.label).set(status.last_success)
        if published.version is not None:
            status.last_version = published.versions[-1].version
            log.info("price feed %s: version %d (%d price fields changed)", status.label,
                     published.version.version, len(published.change.diff.changed))
        return published

    async def _run(self, feed: PriceFeedConfig) -> None:
        while True:
            await self.poll(feed)
            await asyncio.sleep(feed.interval_s)

    async def start(self) -> None:
        """Poll every feed now and then on its interval, in the background."""
        for feed in self._config.price_feeds:
            self._tasks.append(asyncio.create_task(self._run(feed), name=f"price-feed {feed_label(feed.url)}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._own_client and self._client_or_none is not None:
            await self._client_or_none.aclose()
            self._client_or_none = None

    def _client(self) -> httpx.AsyncClient:
        """Made on first use: a gateway without feeds never pays for httpx or its TLS context."""
        if self._client_or_none is None:
            import httpx

            self._client_or_none = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=True)
        return self._client_or_none


class _FeedFailure(Exception):
    pass


def _kind(e: Exception) -> str:
    import httpx  # already loaded: a poll made (or was given) the client

    if isinstance(e, _FeedFailure):
        return str(e)
    if isinstance(e, httpx.TimeoutException):
        return "timeout"
    if isinstance(e, httpx.TransportError):
        return "connect"
    if isinstance(e, GatewayError):  # an unparsable or invalid price file: its message names no credential
        return f"bad_file: {getattr(e, 'message', e)}"
    return type(e).__name__
