"""Durable, replicated price versions: the ledger database keeps them, Redis tells the other replicas.

The request path never waits on this module: it reads `store.book.current(now)`, an in-memory lookup. Everything
else happens off the request path:

- `start()` loads every version from the database into the book (seeding version 1 from the config when the
  table is empty, and adding deployments the config gained since), then follows other replicas' publishes.
- `publish()` allocates the next number in the database (insert of "newest known + 1" under the primary key;
  a clash with another replica re-reads and rebuilds on the newer table, so no change is lost), adds the versions to the local book at once, sets the Redis version
  key and publishes the number. Scheduled versions are added to the book immediately; `PriceBook.current`
  brings them into force when their time comes, without a restart.
- Followers: with Redis, a pub/sub subscription plus the version key (read on every (re)connect and every few
  seconds, so a message lost during a disconnect is caught up); without Redis (one host, maybe `--workers N` on
  SQLite), a cheap `max(version)` query once a second. Either way the database is read only when something new
  was published, and never per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.schema import Config
from gateway.domain import PriceVersion
from gateway.migrations.m0002_prices import price_versions as T
from gateway.prices.book import PriceBook, version_from_config
from gateway.prices.changes import Change, add_missing_deployments, effective_time
from gateway.prices.formats import stored_fields_to_price, version_document
from gateway.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Build = Callable[[PriceVersion, datetime], Change]  # (base version, effective_from) -> the change

# Raise the Redis version key only upwards, so two replicas publishing at once cannot move it back.
_SET_MAX = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ts(dt: datetime) -> str:
    """Fixed-width UTC text: sorts as time on every database."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def encode(version: PriceVersion) -> str:
    return json.dumps(version_document(version), separators=(",", ":"), sort_keys=True)


def decode(number: int, body: str) -> PriceVersion:
    doc = json.loads(body)  # decimals are strings in the body, so no float ever appears
    return PriceVersion(
        version=number,
        effective_from=datetime.fromisoformat(doc["effective_from"]),
        reporting_currency=doc["reporting_currency"],
        fx_rates={k: Decimal(v) for k, v in doc["fx_rates"].items()},
        prices={(r["provider"], r["model"]): stored_fields_to_price(r) for r in doc["prices"]},
    )


@dataclass(frozen=True, slots=True)
class Published:
    versions: tuple[PriceVersion, ...]  # empty when the change changed nothing (no version is made then)
    change: Change  # the change against the version in force at its effective_from

    @property
    def version(self) -> PriceVersion | None:
        return self.versions[0] if self.versions else None


class PriceStore:
    def __init__(self, engine: AsyncEngine, config: Config, *, redis: Any | None = None,
                 prefix: str | None = None, clock: Callable[[], datetime] = utcnow,
                 poll_interval_s: float = 1.0, key_check_s: float = 5.0) -> None:
        """`redis` is a `redis.asyncio.Redis` (or None for a single host); `prefix` defaults to the config's."""
        self._engine = engine
        self._config = config
        self._redis = redis
        prefix = config.gateway.redis_prefix if prefix is None else prefix
        self._channel = f"{prefix}prices:published"
        self._version_key = f"{prefix}prices:version"
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._key_check_s = key_check_s
        self._book: PriceBook | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._listeners: list[Callable[[], object]] = []
        self.subscribed = asyncio.Event()  # set once the Redis subscription is live (tests wait on it)

    # ------------------------------------------------------------------------------------------- reading
    @property
    def book(self) -> PriceBook:
        if self._book is None:
            raise RuntimeError("PriceStore.start() has not run")
        return self._book

    def add_listener(self, callback: Callable[[], object]) -> None:
        """Called (synchronously, on the event loop) after new versions were added to the book."""
        self._listeners.append(callback)

    async def _read(self, after: int) -> list[PriceVersion]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(T.c.version, T.c.body).where(T.c.version > after).order_by(T.c.version))).all()
        return [decode(n, body) for n, body in rows]

    def _add(self, versions: list[PriceVersion]) -> None:
        if not versions:
            return
        if self._book is None:
            self._book = PriceBook(versions)
        else:
            known = self._book.latest_number()
            for v in versions:
                if v.version > known:
                    self._book.add(v)
        for cb in self._listeners:
            try:
                cb()
            except Exception:  # a listener's bug must not stop replication
                log.exception("price book listener failed")

    async def refresh(self) -> int:
        """Add versions the database has and the book lacks; returns the latest number known."""
        async with self._refresh_lock:
            after = self._book.latest_number() if self._book is not None else 0
            self._add(await self._read(after))
            return self._book.latest_number() if self._book is not None else 0

    # ---------------------------------------------------------------------------------------- lifecycle
    async def start(self, *, seed: bool = True, follow: bool = True) -> None:
        """Load the table; with `seed`, store version 1 from the config when the table is empty and add
        deployments the config gained; with `follow`, keep up with other replicas until `stop()`."""
        await self.refresh()
        if self._book is None:
            first = version_from_config(self._config)
            if not seed:
                self._book = PriceBook([first])  # shown, not stored (e.g. `gateway prices list` on a new ledger)
                return
            with contextlib.suppress(IntegrityError, OperationalError):  # another replica seeded it first
                await self._insert([first], 1, "config")
            await self.refresh()
        if seed:
            await self.publish(lambda base, at: add_missing_deployments(base, self._config, at), None,
                               source="config")
        if follow and self._task is None:
            loop = self._follow_redis() if self._redis is not None else self._follow_database()
            self._task = asyncio.create_task(loop, name="price-store-follow")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # --------------------------------------------------------------------------------------- publishing
    async def _insert(self, drafts: list[PriceVersion], first: int, source: str) -> list[PriceVersion]:
        """Insert `drafts` as versions `first`, `first + 1`, ...; IntegrityError when another replica took one.

        `first` is one above the newest version the drafts were built on, never a fresh `max() + 1`: a version
        committed by another replica in between must make this insert fail (and the caller rebuild), or its
        change would be silently overwritten.
        """
        created = _ts(self._clock())
        numbered = [replace(d, version=first + i) for i, d in enumerate(drafts)]
        async with self._engine.begin() as conn:
            await conn.execute(T.insert(), [
                {"version": v.version, "effective_from": _ts(v.effective_from), "created_at": created,
                 "source": source[:500], "body": encode(v)} for v in numbered])
        return numbered

    async def publish(self, build: Build, effective_from: datetime | None, *, source: str,
                      dry_run: bool = False) -> Published:
        """Apply `build` to the version in force at `effective_from` (now when absent or past) and store it.

        Versions already scheduled after that time get the same change applied too (as new versions at their
        own times), so a later scheduled version never undoes an earlier-taking change it did not know about.
        """
        for attempt in range(20):
            known = await self.refresh()
            at = effective_time(effective_from, self._clock())
            change = build(self.book.current(at), at)
            if dry_run or not change.diff.has_changes:
                return Published((), change)
            drafts = [change.version]
            for later in sorted({v.effective_from for v in self.book.versions() if v.effective_from > at}):
                again = build(self.book.current(later), later)
                if again.diff.has_changes:
                    drafts.append(again.version)
            try:
                numbered = await self._insert(drafts, known + 1, source)
            except (IntegrityError, OperationalError):
                # Another replica took the number (or held SQLite's write lock): re-read, rebuild, retry.
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            self._add(numbered)
            await self._announce(numbered[-1].version)
            return Published(tuple(numbered), change)
        raise RuntimeError("could not allocate a price version number after 20 attempts")

    async def _announce(self, number: int) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.eval(_SET_MAX, 1, self._version_key, number)
            await self._redis.publish(self._channel, str(number))
        except Exception as e:  # stored already; followers catch up from the version key later
            log.warning("price version %d stored but not announced on Redis: %s", number, type(e).__name__)

    # ---------------------------------------------------------------------------------------- following
    async def _catch_up(self) -> None:
        raw = await self._redis.get(self._version_key)  # type: ignore[union-attr]
        if raw is not None and int(raw) > self.book.latest_number():
            await self.refresh()

    async def _follow_redis(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub()  # type: ignore[union-attr]
            try:
                await pubsub.subscribe(self._channel)
                self.subscribed.set()
                await self._catch_up()  # whatever was published while we were not subscribed
                backoff = 0.1
                since_check = 0.0
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and int(msg["data"]) > self.book.latest_number():
                        await self.refresh()
                    since_check += 1.0 if msg is None else 0.0
                    if since_check >= self._key_check_s:
                        since_check = 0.0
                        await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis or database unreachable: keep serving the book we have, retry
                self.subscribed.clear()
                log.warning("price store: following other replicas failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(backoff)
                with contextlib.suppress(Exception):  # Redis down, the database maybe not: new versions from it
                    await self.refresh()
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _follow_database(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                async with self._engine.connect() as conn:
                    top = (await conn.execute(sa.select(sa.func.max(T.c.version)))).scalar() or 0
                if top > self.book.latest_number():
                    await self.refresh()
            except (DBAPIError, OSError) as e:
                log.warning("price store: reading the ledger database failed (%s); retrying", type(e).__name__)


REDIS_MAX_CONNECTIONS = 256
REDIS_POOL_WAIT_S = 10.0


def redis_from_config(config: Config) -> Any | None:
    """A `redis.asyncio.Redis` for `gateway.redis_url`, or None when Redis is not configured.

    The pool *waits* for a free connection when all are busy: redis-py's default pool raises
    `MaxConnectionsError` at 100 connections in use, which turned a burst of concurrent requests on one replica
    (each doing a rate-limit check, a budget reservation and a settlement) into 500s.
    """
    if not config.gateway.redis_url:
        return None
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(config.gateway.redis_url, max_connections=REDIS_MAX_CONNECTIONS,
                                                    timeout=REDIS_POOL_WAIT_S)
    return aioredis.Redis.from_pool(pool)
