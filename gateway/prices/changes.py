"""Pure price-table arithmetic: apply an update or an import to a version, giving the next version and a diff.

No I/O and no clock: the store decides *when* (and allocates the version number); this decides *what*. Every
price that comes out has been through the config's own validator (`PriceConfig`), so a price that would be
refused in the config file is refused here too, with the offending field named in `BadRequest.param`
(e.g. `prices[0].tiers`, `prices[2].input`, `fx_rates.USD`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from pydantic import ValidationError

from gateway.config.schema import Config, PriceConfig, parse_money, _check_currency
from gateway.domain import DeploymentKey, Price, PriceVersion
from gateway.errors import BadRequest
from gateway.prices.formats import PRICE_FIELDS, PriceEntry, PriceFile, match, parse_gateway_document, price_fields

_COMPARED = ("currency", "per", "input", "output", "cached_input", "cache_write", "tiers", "off_peak")
_CONFIG_FACTS = ("context_window", "quality")  # shown by GET /admin/prices, owned by the config file


@dataclass(frozen=True, slots=True)
class FieldChange:
    provider: str
    model: str
    field: str
    old: Any  # gateway-format rendering (decimals as strings; lists for tiers / windows)
    new: Any


@dataclass(frozen=True, slots=True)
class Diff:
    changed: tuple[FieldChange, ...] = ()
    unchanged: tuple[DeploymentKey, ...] = ()  # named by the update or file, same price as before
    not_named: tuple[DeploymentKey, ...] = ()  # deployments the update or file did not price: they keep theirs
    unmatched: tuple[tuple[str, str], ...] = ()  # (entry, reason): entries that price no deployment
    fx_changed: tuple[tuple[str, str | None, str], ...] = ()  # (currency, old, new)
    notes: tuple[str, ...] = ()

    @property
    def changed_deployments(self) -> tuple[DeploymentKey, ...]:
        return tuple(dict.fromkeys((c.provider, c.model) for c in self.changed))

    @property
    def has_changes(self) -> bool:
        return bool(self.changed or self.fx_changed)


@dataclass(frozen=True, slots=True)
class Change:
    version: PriceVersion  # numbered 0: the store allocates the real number when it publishes
    diff: Diff


def effective_time(requested: datetime | None, now: datetime) -> datetime:
    """A change is in force from `requested`, or at once when it is absent or already past."""
    return now if requested is None or requested < now else requested


def _param(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _validated_price(merged: Mapping[str, Any], path: str) -> Price:
    try:
        return PriceConfig.model_validate(merged).to_price()
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        param = _param(path, tuple(err["loc"]))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise BadRequest(f"{param}: {msg}", param=param) from None


def _merge_fx(base: Mapping[str, Decimal], given: Mapping[str, Any]) -> dict[str, Decimal]:
    out = dict(base)
    for code, raw in given.items():
        param = f"fx_rates.{code}"
        try:
            _check_currency(str(code))
            rate = parse_money(raw)
        except ValueError as e:
            raise BadRequest(f"{param}: {e}", param=param) from None
        if rate <= 0:
            raise BadRequest(f"{param}: an fx rate must be positive, got {rate}", param=param)
        out[str(code)] = rate
    return out


def _check_extra(entry: PriceEntry, config: Config, key: DeploymentKey) -> None:
    dep = next(d for d in config.deployments if (d.provider, d.model) == key)
    for name, value in entry.extra.items():
        param = f"{entry.path}.{name}"
        if name not in _CONFIG_FACTS:
            raise BadRequest(f"{param}: unknown key (price fields: {', '.join(PRICE_FIELDS)})", param=param)
        if value != getattr(dep, name):  # a GET body sent back unchanged is fine; a new value is not
            raise BadRequest(f"{param}: {name} is set in the config file, not in the price table", param=param)


def _unknown_deployment(entry: PriceEntry, config: Config) -> BadRequest:
    if entry.provider not in config.providers:
        param = f"{entry.path}.provider"
        return BadRequest(f"{param}: unknown provider {entry.provider!r}", param=param)
    param = f"{entry.path}.model"
    models = sorted(d.model for d in config.deployments if d.provider == entry.provider)
    return BadRequest(f"{param}: no deployment ({entry.provider}, {entry.model}); {entry.provider} serves "
                      f"{', '.join(models) or 'nothing'}", param=param)


def _field_changes(key: DeploymentKey, old: Price | None, new: Price) -> list[FieldChange]:
    new_r = price_fields(new)
    if old is None:
        return [FieldChange(*key, f, None, new_r.get(f)) for f in _COMPARED if new_r.get(f) not in (None, [])]
    old_r = price_fields(old)
    # Compare the values (Decimal equality), not their renderings: 10 and 10.0 are the same price.
    return [FieldChange(*key, f, old_r.get(f), new_r.get(f)) for f in _COMPARED
            if getattr(old, f) != getattr(new, f)]


def apply_file(base: PriceVersion, file: PriceFile, config: Config, effective_from: datetime, *,
               strict: bool) -> Change:
    """Apply `file` to `base`. `strict` (PUT): an entry naming no deployment is an error; else it is listed."""
    fx = _merge_fx(base.fx_rates, file.fx_rates)
    matched, unmatched = match(file, config)
    if strict and unmatched:
        raise _unknown_deployment(unmatched[0], config)
    seen: dict[DeploymentKey, str] = {}
    prices = dict(base.prices)
    changed: list[FieldChange] = []
    unchanged: list[DeploymentKey] = []
    notes: list[str] = []
    order = {(d.provider, d.model): i for i, d in enumerate(config.deployments)}
    for key in sorted(matched, key=order.__getitem__):
        entry = matched[key]
        if file.format == "gateway":
            dup = next((e.path for e in file.entries if e is not entry and (e.provider, e.model) == key), None)
            if dup is not None:
                raise BadRequest(f"{entry.path}: deployment ({key[0]}, {key[1]}) named twice (also {dup})",
                                 param=entry.path)
            _check_extra(entry, config, key)
        seen[key] = entry.path
        old = base.prices.get(key)
        merged = price_fields(old) if old is not None else {}
        for name, value in entry.fields.items():
            merged[name] = [] if name in ("tiers", "off_peak") and value is None else value
        new = _validated_price(merged, entry.path)
        if new.currency != base.reporting_currency and new.currency not in fx:
            param = f"{entry.path}.currency" if file.format == "gateway" else f"fx_rates.{new.currency}"
            raise BadRequest(f"{param}: no fx rate for {new.currency} (reporting currency is "
                             f"{base.reporting_currency}); add fx_rates.{new.currency}", param=param)
        diffs = _field_changes(key, old, new)
        if diffs:
            changed.extend(diffs)
            prices[key] = new
        else:
            unchanged.append(key)
        dep = config.deployments[order[key]]
        if entry.context_window is not None and entry.context_window != dep.context_window:
            notes.append(f"{key[0]}/{key[1]}: {entry.name} has context {entry.context_window}, config says "
                         f"{dep.context_window} (context windows are set in the config file)")
        if entry.max_output_tokens is not None and dep.max_output_tokens not in (None, entry.max_output_tokens):
            notes.append(f"{key[0]}/{key[1]}: {entry.name} has max output {entry.max_output_tokens}, config says "
                         f"{dep.max_output_tokens}")
    fx_changed = tuple((c, None if c not in base.fx_rates else str(base.fx_rates[c]), str(v))
                       for c, v in sorted(fx.items()) if base.fx_rates.get(c) != v)
    for code in {p.currency for p in prices.values()} - {base.reporting_currency} - set(fx):
        raise BadRequest(f"fx_rates.{code}: a price is in {code} but no fx rate is set", param=f"fx_rates.{code}")
    diff = Diff(
        changed=tuple(changed),
        unchanged=tuple(unchanged),
        not_named=tuple(k for k in order if k not in seen),
        unmatched=tuple([(e.name, "names no configured deployment") for e in unmatched] + list(file.skipped)),
        fx_changed=fx_changed,
        notes=tuple(notes),
    )
    version = PriceVersion(0, effective_from, base.reporting_currency, fx, prices)
    return Change(version, diff)


def apply_update(base: PriceVersion, body: Mapping[str, Any], config: Config, effective_from: datetime) -> Change:
    """`PUT /admin/prices`: any subset of the named deployments' price fields; the rest keep their values."""
    return apply_file(base, parse_gateway_document(body), config, effective_from, strict=True)


def apply_import(base: PriceVersion, file: PriceFile, config: Config, effective_from: datetime) -> Change:
    """A whole price file (gateway, LiteLLM or OpenRouter): matched entries applied, the rest listed."""
    return apply_file(base, file, config, effective_from, strict=False)


def add_missing_deployments(base: PriceVersion, config: Config, effective_from: datetime) -> Change:
    """Config prices for deployments the stored table lacks (added to the config file since it was stored).

    Deployments already in the table keep the table's prices: once stored, the table, not the config file, is
    the source of truth (it is changed by PUT, imports and feeds).
    """
    added = {(d.provider, d.model): d.price.to_price() for d in config.deployments
             if (d.provider, d.model) not in base.prices}
    fx = dict(base.fx_rates)
    for code, rate in config.fx_rates.items():
        fx.setdefault(code, rate)
    changed = tuple(c for key, price in added.items() for c in _field_changes(key, None, price))
    version = PriceVersion(0, effective_from, base.reporting_currency, fx, {**base.prices, **added})
    return Change(version, Diff(changed=changed, notes=tuple(f"{p}/{m}: added from the config file"
                                                                for p, m in added)))
