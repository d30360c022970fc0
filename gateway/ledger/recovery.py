"""Closing rows that a dead process left `in_flight`, without ever touching a live replica's rows.

Every ledger writer names itself in the rows it opens (`replica_id`, unique among live processes), holds a
liveness lock for its whole life (`gateway/ledger/liveness.py`: a PostgreSQL advisory lock, or `flock` on a file
next to the SQLite database) and heartbeats in `ledger_replicas`. A row is abandoned when its replica:
- stopped (graceful shutdown sets `stopped_at`), or is the caller's own replica id (a process just starting has
  opened nothing yet, so such rows belong to its dead predecessor with the same id); else
- recorded a liveness lock that recovery can take: the process is gone, so its rows close at once; a replica
  whose lock is held is alive, however late its heartbeat; else (no lock recorded, or one this host cannot test)
- has not heartbeated for longer than `stale_after_s`, or has no replica row at all and the request started
  longer ago than that. `stale_after_s` must exceed the longest upstream timeout: the heartbeat is independent of
  requests, so a live replica is never that late.

An abandoned row becomes `interrupted` with `usage_source = estimated`: the prompt as estimated at the start (or as
recorded, if the row was updated with a vendor count), the output tokens the row recorded (0 if none), priced
with the row's own price version when the caller can look it up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.config.schema import Config
from gateway.decisions.pricing import price_usage
from gateway.domain import Cost, DeploymentKey, PriceVersion, Usage
from gateway.ledger.liveness import Probe, probe
from gateway.ledger.tables import cost_columns, ledger, replicas

log = logging.getLogger(__name__)

STALE_MARGIN_S = 30.0
PriceLookup = Callable[[int], PriceVersion | None]


def stale_after_for(config: Config, margin_s: float = STALE_MARGIN_S) -> float:
    """The longest provider timeout plus a margin: a replica silent for longer than this is gone."""
    return max((p.timeout_s for p in config.providers.values()), default=60.0) + margin_s


@dataclass(frozen=True, slots=True)
class ReplicaState:
    replica_id: str
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    liveness: str | None = None


@dataclass(frozen=True, slots=True)
class InFlightRow:
    request_id: str
    replica_id: str
    started_at: datetime
    provider: str
    model: str
    price_version: int
    prompt_tokens_estimate: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cache_write_tokens: int = 0


def is_abandoned(row: InFlightRow, known: Mapping[str, ReplicaState], now: datetime, stale_after_s: float,
                 own_replica: str | None = None, lock_held: Mapping[str, bool] | None = None) -> bool:
    """`lock_held`: replica id -> whether its liveness lock is held (absent: could not tell)."""
    if own_replica is not None and row.replica_id == own_replica:
        return True
    replica = known.get(row.replica_id)
    if replica is not None and replica.stopped_at is not None:
        return True
    held = lock_held.get(row.replica_id) if lock_held is not None else None
    if held is not None:
        return not held  # the lock is the truth: a held lock is a live process, a free one a dead one
    cutoff = now - timedelta(seconds=stale_after_s)
    if replica is None:
        return row.started_at < cutoff  # never registered (or pruned): only once it is surely over
    return replica.stopped_at is not None or replica.heartbeat_at < cutoff


def estimated_usage(row: InFlightRow) -> Usage:
    prompt_recorded = row.input_tokens + row.cached_input_tokens + row.cache_write_tokens
    if prompt_recorded > 0:
        return Usage(row.input_tokens, row.cached_input_tokens, row.output_tokens, source="estimated",
                     cache_write_tokens=row.cache_write_tokens)
    return Usage(row.prompt_tokens_estimate, 0, row.output_tokens, source="estimated")


def interrupted_values(row: InFlightRow, version: PriceVersion | None, now: datetime,
                       baseline: DeploymentKey | None = None) -> dict[str, Any]:
    """The columns that close `row`: a pure function of the row and its price version."""
    usage = estimated_usage(row)
    cost: Cost | None = None
    baseline_cost: Decimal | None = None
    if version is not None:
        price = version.prices.get((row.provider, row.model))
        if price is not None:
            cost = price_usage(usage, price, version, row.started_at)
        base_price = version.prices.get(baseline) if baseline is not None else None
        if base_price is not None:
            baseline_cost = price_usage(usage, base_price, version, row.started_at).total_reporting
    return {
        "status": "interrupted", "usage_source": "estimated", "finished_at": now, "error_kind": "replica_gone",
        "input_tokens": usage.input_tokens, "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens, "cache_write_tokens": usage.cache_write_tokens,
        **cost_columns(cost, baseline_cost),
    }


_ROW_COLUMNS = [ledger.c[f] for f in InFlightRow.__dataclass_fields__]


async def _load(conn: AsyncConnection) -> tuple[list[InFlightRow], dict[str, ReplicaState]]:
    rows = (await conn.execute(sa.select(*_ROW_COLUMNS).where(ledger.c.status == "in_flight"))).all()
    reps = (await conn.execute(sa.select(replicas.c.replica_id, replicas.c.heartbeat_at,
                                         replicas.c.stopped_at, replicas.c.liveness))).all()
    return ([InFlightRow(*r) for r in rows], {r[0]: ReplicaState(*r) for r in reps})


async def recover(engine: AsyncEngine, now: datetime, stale_after_s: float, *,
                  price_lookup: PriceLookup | None = None, baseline: DeploymentKey | None = None,
                  own_replica: str | None = None, use_locks: bool = True) -> list[str]:
    """Close abandoned in-flight rows as `interrupted`; returns their request ids.

    The update is guarded by `status = 'in_flight'`, so a row finished meanwhile, or closed by another replica
    recovering at the same time, is left as it is. `use_locks=False` decides by heartbeats alone.
    """
    checked = Probe()
    try:
        async with engine.begin() as conn:
            rows, known = await _load(conn)
            if use_locks:
                # Only replicas with rows to decide on, and not already decided by a stop or by being us.
                ask = {r.replica_id for r in rows if r.replica_id != own_replica}
                markers = {rid: known[rid].liveness for rid in ask
                           if rid in known and known[rid].stopped_at is None and known[rid].liveness}
                if markers:
                    checked = await probe(conn, markers)
            todo = [r for r in rows if is_abandoned(r, known, now, stale_after_s, own_replica, checked.held)]
            if not todo:
                return []
            await _close(conn, todo, now, price_lookup, baseline)
    finally:
        checked.done()  # after the commit: only now may a dead replica's lock file go
    closed = [r.request_id for r in todo]
    log.warning("ledger recovery closed %d in-flight rows of dead replicas as interrupted", len(closed))
    return closed


async def _close(conn: AsyncConnection, todo: list[InFlightRow], now: datetime, price_lookup: PriceLookup | None,
                 baseline: DeploymentKey | None) -> None:
    closing = []
    for r in todo:
        version = price_lookup(r.price_version) if price_lookup is not None else None
        closing.append((r.request_id, interrupted_values(r, version, now, baseline)))
    stmt = (
        ledger.update()
        .where(ledger.c.request_id == sa.bindparam("b_request_id"), ledger.c.status == "in_flight")
        .values({k: sa.bindparam(f"b_{k}") for k in closing[0][1]})
    )
    await conn.execute(stmt, [{"b_request_id": rid, **{f"b_{k}": v for k, v in values.items()}}
                              for rid, values in closing])


async def heartbeat(conn: AsyncConnection, replica_id: str, now: datetime, *, starting: bool = False,
                    stopping: bool = False, liveness: str | None = None) -> None:
    """Register or refresh this replica (update first: the common case is one statement). `starting` records
    the replica's liveness marker (`liveness`, None for none)."""
    values: dict[str, Any] = {"heartbeat_at": now}
    if starting:
        values.update(started_at=now, stopped_at=None, liveness=liveness)
    if stopping:
        values["stopped_at"] = now
    result = await conn.execute(replicas.update().where(replicas.c.replica_id == replica_id).values(values))
    if result.rowcount == 0:
        await conn.execute(replicas.insert().values(replica_id=replica_id, started_at=now, heartbeat_at=now,
                                                    stopped_at=now if stopping else None, liveness=liveness))
