"""The operator's price operations, shared by the admin API (`gateway/http/admin_prices.py`), the CLI
(`gateway prices import`) and the web console, so none of them can disagree: read the live table, a deployment's
history, change prices (PUT semantics), import a price file (dry run or for real).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from gateway.config.schema import Config
from gateway.domain import DeploymentKey, PriceVersion
from gateway.errors import BadRequest
from gateway.prices.book import PriceBook
from gateway.prices.changes import Change, apply_import, apply_update
from gateway.prices.formats import PriceFile, parse_datetime, price_fields, version_document
from gateway.prices.store import PriceStore, Published


def table(version: PriceVersion, config: Config) -> dict[str, Any]:
    """`GET /admin/prices`'s body for one version (without `scheduled`)."""
    doc = version_document(version, config.deployments)
    doc.pop("reporting_currency", None)
    return doc


def live_table(book: PriceBook, config: Config, now: datetime) -> dict[str, Any]:
    """The version in force at `now`, and the versions scheduled after it."""
    body = table(book.current(now), config)
    body["scheduled"] = [{"version": v.version, "effective_from": v.effective_from.isoformat()}
                         for v in book.versions() if v.effective_from > now]
    return body


def history(book: PriceBook, keys: Iterable[DeploymentKey]) -> list[dict[str, Any]]:
    """Every version's price of each deployment, oldest first; `changed` marks where it differs from before."""
    versions = book.versions()  # sorted by (effective_from, version)
    out = []
    for key in keys:
        rows = []
        previous = None
        for v in versions:
            price = v.prices.get(key)
            if price is None:
                continue
            rows.append({"version": v.version, "effective_from": v.effective_from.isoformat(),
                         "changed": previous is None or price != previous, **price_fields(price)})
            previous = price
        out.append({"provider": key[0], "model": key[1], "versions": rows})
    return out


def requested_time(body: Mapping[str, Any]) -> datetime | None:
    return parse_datetime(body["effective_from"], "effective_from") if body.get("effective_from") else None


def preview_update(store: PriceStore, config: Config, body: Mapping[str, Any], now: datetime) -> Change:
    """What `update` would do, against the version in force now; a bad body raises BadRequest, writing nothing."""
    if not isinstance(body, Mapping):
        raise BadRequest("expected a JSON object with `prices`", param="prices")
    requested = requested_time(body)
    return apply_update(store.book.current(now), body, config, requested or now)


async def update(store: PriceStore, config: Config, body: Mapping[str, Any], now: datetime,
                 source: str = "admin") -> Published:
    """`PUT /admin/prices`: validated against the version in force now first, so a bad body changes nothing."""
    preview_update(store, config, body, now)
    return await store.publish(lambda base, at: apply_update(base, body, config, at), requested_time(body),
                               source=source)


async def import_file(store: PriceStore, config: Config, parsed: PriceFile, *, source: str,
                      dry_run: bool) -> Published:
    """A parsed LiteLLM, OpenRouter or gateway price file (`formats.parse`): the diff always, a new version unless
    `dry_run`."""
    return await store.publish(lambda base, at: apply_import(base, parsed, config, at), parsed.effective_from,
                               source=source, dry_run=dry_run)


def diff_json(change: Change) -> dict[str, Any]:
    d = change.diff
    return {
        "changed": [{"provider": c.provider, "model": c.model, "field": c.field, "old": c.old, "new": c.new}
                    for c in d.changed],
        "unchanged": [{"provider": p, "model": m} for p, m in d.unchanged],
        "fx_rates_changed": [{"currency": c, "old": o, "new": n} for c, o, n in d.fx_changed],
    }
