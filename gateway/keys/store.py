"""The key store: issue, list and revoke client keys, set team budgets, and verify a presented key.

The database is the truth; the request path reads an in-memory cache (`verify`, `team_budget`) so that checking
a key costs one HMAC and a dict lookup. The cache is kept current by `gateway.keys.sync.KeySync`: with Redis,
revocations are published and kept in a revoked-set, so every replica drops a revoked key within milliseconds;
without Redis, by reloading from the database every second (covers several workers on one SQLite file).
A revocation, once seen, is never undone by a reload that raced with it: revoked ids only ever accumulate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.decisions.limits import Budget, parse_budget
from gateway.errors import BadRequest, NotFound
from gateway.keys import secrets
from gateway.keys.identity import DEFAULT_TEAM  # noqa: F401 - re-exported
from gateway.keys.tables import api_keys, teams

_TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    team: str
    hash: str
    created_at: datetime
    revoked_at: datetime | None
    budget: Budget | None
    rpm: int | None
    tpm: int | None

    def public(self) -> dict[str, Any]:
        """What listings show: everything but the hash (and the key, which is never stored)."""
        return {
            "id": self.id,
            "team": self.team,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "budget": str(self.budget.amount) if self.budget else None,
            "budget_period": self.budget.period if self.budget else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
        }


@dataclass(frozen=True, slots=True)
class TeamRecord:
    name: str
    budget: Budget | None

    def public(self) -> dict[str, Any]:
        return {
            "team": self.name,
            "budget": str(self.budget.amount) if self.budget else None,
            "budget_period": self.budget.period if self.budget else None,
        }


def check_team(name: str) -> str:
    if not isinstance(name, str) or not _TEAM_RE.match(name):
        raise BadRequest("team must be 1-100 characters: letters, digits, '_', '.', ':' or '-'", param="team")
    return name


# The rate-limit buckets are Lua numbers (doubles) on Redis: integers up to 2**53 are exact there, and the columns
# are BIGINT. Anything larger is refused with the field's name rather than failing in the database.
MAX_LIMIT = 2**53 - 1


def _check_limit(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{name} must be a positive integer", param=name)
    if value > MAX_LIMIT:
        raise BadRequest(f"{name} must be at most {MAX_LIMIT}", param=name)
    return value


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _budget(amount: str | None, period: str | None) -> Budget | None:
    return None if amount is None or period is None else Budget(Decimal(amount), period)  # type: ignore[arg-type]


def _key_from_row(row: Any) -> KeyRecord:
    created = _utc(row.created_at) or datetime.now(timezone.utc)  # NOT NULL column; keeps the type exact
    return KeyRecord(row.id, row.team, row.hash, created, _utc(row.revoked_at),
                     _budget(row.budget, row.budget_period), row.rpm, row.tpm)


Listener = Callable[[str, str], Awaitable[None]]  # (event, key id or team) -> publish to other replicas


class KeyStore:
    def __init__(self, engine: AsyncEngine, secret: bytes, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._engine = engine
        self._secret = secret
        self._clock = clock
        self._keys: dict[str, KeyRecord] = {}  # valid (unrevoked) keys by id
        self._revoked: set[str] = set()
        self._teams: dict[str, TeamRecord] = {}
        self._publish: Listener | None = None  # set by KeySync when Redis is configured

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def set_publisher(self, publish: Listener | None) -> None:
        self._publish = publish

    # --- the request path (cache) ------------------------------------------------------------------------------

    async def verify(self, token: str) -> KeyRecord | None:
        """The key's record if `token` is a valid, unrevoked gateway key; None otherwise (never says why)."""
        key_id = secrets.parse_key(token)
        if key_id is None or key_id in self._revoked:
            return None
        record = self._keys.get(key_id)
        if record is None:
            # Issued on another replica since our last reload: one indexed lookup, then cached.
            record = await self._load_key(key_id)
            if record is None or key_id in self._revoked:
                return None
        return record if secrets.matches(self._secret, token, record.hash) else None

    def team_budget(self, team: str) -> Budget | None:
        record = self._teams.get(team)
        return record.budget if record else None

    def is_gateway_key(self, token: str) -> bool:
        return secrets.parse_key(token) is not None

    # --- cache maintenance (called by KeySync) -----------------------------------------------------------------

    def mark_revoked(self, key_ids: set[str] | list[str]) -> None:
        for key_id in key_ids:
            self._revoked.add(key_id)
            self._keys.pop(key_id, None)

    async def reload(self) -> None:
        """Replace the cache from the database (revocations seen by pub/sub stay in force)."""
        async with self._engine.connect() as conn:
            key_rows = (await conn.execute(sa.select(api_keys))).all()
            team_rows = (await conn.execute(sa.select(teams))).all()
        fresh: dict[str, KeyRecord] = {}
        revoked: set[str] = set()
        for row in key_rows:
            record = _key_from_row(row)
            if record.revoked_at is not None:
                revoked.add(record.id)
            else:
                fresh[record.id] = record
        self._revoked |= revoked
        self._keys = {k: v for k, v in fresh.items() if k not in self._revoked}
        self._teams = {r.name: TeamRecord(r.name, _budget(r.budget, r.budget_period)) for r in team_rows}

    async def _load_key(self, key_id: str) -> KeyRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            return None
        record = _key_from_row(row)
        if record.revoked_at is not None:
            self.mark_revoked([key_id])
            return None
        self._keys[key_id] = record
        return record

    # --- administration ----------------------------------------------------------------------------------------

    async def create_key(self, team: str, *, budget: Budget | None = None, rpm: int | None = None,
                         tpm: int | None = None) -> tuple[KeyRecord, str]:
        """Issue a key; returns its record and the key itself, which is shown once and never stored."""
        check_team(team)
        _check_limit(rpm, "rpm")
        _check_limit(tpm, "tpm")
        key_id, token = secrets.new_key()
        record = KeyRecord(key_id, team, secrets.hash_key(self._secret, token), self._clock(), None, budget, rpm, tpm)
        async with self._engine.begin() as conn:
            await conn.execute(api_keys.insert().values(
                id=record.id, team=record.team, hash=record.hash, created_at=record.created_at, revoked_at=None,
                budget=str(budget.amount) if budget else None, budget_period=budget.period if budget else None,
                rpm=rpm, tpm=tpm))
        self._keys[key_id] = record
        if self._publish is not None:
            await self._publish("changed", key_id)
        return record, token

    async def list_keys(self) -> list[KeyRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))).all()
        return [_key_from_row(r) for r in rows]

    async def get_key(self, key_id: str) -> KeyRecord:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return _key_from_row(row)

    async def revoke_key(self, key_id: str) -> KeyRecord:
        """Revoke at once: here immediately, on other replicas through KeySync. Revoking twice is harmless."""
        record = await self.get_key(key_id)
        if record.revoked_at is None:
            now = self._clock()
            async with self._engine.begin() as conn:
                await conn.execute(api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                                   .values(revoked_at=now))
            record = replace(record, revoked_at=now)
        self.mark_revoked([key_id])
        if self._publish is not None:
            await self._publish("revoked", key_id)
        return record

    async def set_team(self, name: str, budget: Budget | None) -> TeamRecord:
        check_team(name)
        values = {"budget": str(budget.amount) if budget else None,
                  "budget_period": budget.period if budget else None, "updated_at": self._clock()}
        async with self._engine.begin() as conn:
            done = await conn.execute(teams.update().where(teams.c.name == name).values(**values))
            if done.rowcount == 0:
                try:
                    await conn.execute(teams.insert().values(name=name, **values))
                except sa.exc.IntegrityError:  # created concurrently: ours is the later write
                    await conn.execute(teams.update().where(teams.c.name == name).values(**values))
        record = TeamRecord(name, budget)
        self._teams[name] = record
        if self._publish is not None:
            await self._publish("changed", name)
        return record

    async def list_teams(self) -> list[TeamRecord]:
        """Teams with a budget row, plus every team that has keys (without a budget)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(teams))).all()
            key_teams = (await conn.execute(sa.select(api_keys.c.team).distinct())).scalars().all()
        found = {r.name: TeamRecord(r.name, _budget(r.budget, r.budget_period)) for r in rows}
        for team in key_teams:
            found.setdefault(team, TeamRecord(team, None))
        return [found[name] for name in sorted(found)]


def budget_from_input(amount: object, period: object) -> Budget | None:
    """`parse_budget` with the admin API's error type."""
    try:
        return parse_budget(amount, period)
    except ValueError as e:
        raise BadRequest(str(e), param="budget") from None
