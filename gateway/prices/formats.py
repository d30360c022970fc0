"""Price files in, price tables out: the gateway's own format, LiteLLM's price map and OpenRouter's model listing.

Parsing turns a file's text into plain `PriceEntry` values whose numbers are exact `Decimal`s read from the text
(JSON through `parse_float=Decimal`, YAML through the config loader): a price never passes through a binary float.
Entries carry their price fields in the shape of the config's `price:` block (what `PriceConfig` validates), so
one validator (in `changes.py`) judges every source. Matching an entry to a deployment is also here: by
(provider, model) for the gateway's format, by `price_key` for LiteLLM and OpenRouter.

This module also renders price versions back to the gateway's format (`GET /admin/prices`, the stored copy of a
version): decimals as strings written out in full, so what goes out reads back as the same number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Literal, Mapping

from gateway.config.load import parse_yaml_text
from gateway.config.schema import Config, DeploymentConfig, PriceConfig
from gateway.domain import DeploymentKey, Price, PriceVersion
from gateway.errors import BadRequest

Format = Literal["gateway", "litellm", "openrouter"]
FORMATS: tuple[str, ...] = ("gateway", "litellm", "openrouter")

# Price fields a gateway-format entry may carry (plus provider/model; context_window/quality are config facts).
PRICE_FIELDS = ("currency", "per", "input", "output", "cached_input", "cache_write", "tiers", "off_peak")
_ABOVE_RE = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost)"
    r"_above_(\d+)(k?)_tokens$")
# LiteLLM's names for the price fields (USD per token): cache reads are `cached_input`, cache writes `cache_write`.
_TIER_FIELD = {"input_cost_per_token": "input", "output_cost_per_token": "output",
               "cache_read_input_token_cost": "cached_input", "cache_creation_input_token_cost": "cache_write"}
_CACHE_FIELDS = ("cached_input", "cache_write")


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One priced model from a file, before it is matched to a deployment.

    `fields` uses the config's `price:` shape. Gateway-format entries hold only the fields the file gave (the
    rest keep their values); LiteLLM/OpenRouter entries hold every field, since their price replaces the old
    one whole (currency, tiers and windows included).
    """

    name: str  # how the file names it: "provider/model" (gateway) or the entry's key / id
    fields: Mapping[str, Any]
    path: str  # where it sits in the file, for error messages: "prices[3]" or the entry's key
    provider: str | None = None  # gateway format only
    model: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # other keys of a gateway entry (validated later)


@dataclass(frozen=True, slots=True)
class PriceFile:
    format: str
    entries: tuple[PriceEntry, ...]
    fx_rates: Mapping[str, Any] = field(default_factory=dict)
    effective_from: datetime | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (name, reason): entries with no usable per-token price


# ---------------------------------------------------------------------------------------------------- parsing

def parse(text: str, fmt: str) -> PriceFile:
    if fmt == "gateway":
        return parse_gateway(text)
    if fmt == "litellm":
        return parse_litellm(text)
    if fmt == "openrouter":
        return parse_openrouter(text)
    raise BadRequest(f"unknown price file format {fmt!r} (use gateway, litellm or openrouter)", param="format")


def _json_exact(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as e:
        raise BadRequest(f"not valid JSON: {e}") from None


def parse_datetime(value: Any, param: str) -> datetime:
    """ISO 8601; a time without an offset is UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"{param}: not an ISO 8601 time: {value!r}", param=param) from None
    else:
        raise BadRequest(f"{param}: expected an ISO 8601 time string", param=param)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def parse_gateway_document(data: Any) -> PriceFile:
    """The gateway's own shape (`GET /admin/prices`, `PUT /admin/prices`, config/prices/*.yaml), already decoded."""
    if isinstance(data, dict) and "prices" not in data and isinstance(data.get("fx_rates"), dict):
        data = {**data, "prices": []}  # a change of FX rates alone
    if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
        raise BadRequest("expected an object with a `prices` list", param="prices")
    # version, scheduled and reporting_currency are what GET adds; sending a GET body back is fine.
    unknown = set(data) - {"prices", "fx_rates", "effective_from", "version", "scheduled", "reporting_currency"}
    if unknown:
        key = sorted(unknown)[0]
        raise BadRequest(f"{key}: unknown key", param=key)
    fx = data.get("fx_rates") or {}
    if not isinstance(fx, dict):
        raise BadRequest("fx_rates: expected a mapping of currency to rate", param="fx_rates")
    eff = data.get("effective_from")
    entries = []
    for i, item in enumerate(data["prices"]):
        path = f"prices[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{path}: expected an object", param=path)
        for key in ("provider", "model"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise BadRequest(f"{path}.{key}: required (names the deployment)", param=f"{path}.{key}")
        fields = {k: v for k, v in item.items() if k in PRICE_FIELDS}
        extra = {k: v for k, v in item.items() if k not in PRICE_FIELDS and k not in ("provider", "model")}
        entries.append(PriceEntry(f"{item['provider']}/{item['model']}", fields, path,
                                  provider=item["provider"], model=item["model"], extra=extra))
    return PriceFile("gateway", tuple(entries), fx,
                     parse_datetime(eff, "effective_from") if eff is not None else None)


def parse_gateway(text: str) -> PriceFile:
    """YAML or JSON (YAML is a superset); numbers read as exact decimals either way."""
    try:
        data = parse_yaml_text(text)
    except Exception as e:  # yaml.YAMLError, or a number the Decimal constructor refuses
        raise BadRequest(f"not a valid YAML/JSON price file: {e}") from None
    return parse_gateway_document(data)


def _per_million(value: Any) -> Decimal | None:
    """USD per token (number or string, exact) -> USD per 1M tokens; a shift of the exponent, so exact."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return d.scaleb(6) if d.is_finite() else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return None


def _litellm_tiers(item: Mapping[str, Any], max_input: int | None) -> list[dict[str, Any]] | None:
    """Prompt-length tiers from `tiered_pricing` ranges or `*_above_Nk_tokens` keys (K = 1,000, as LiteLLM)."""
    listed = item.get("tiered_pricing")
    if isinstance(listed, list) and listed and all(isinstance(t, dict) and "range" in t for t in listed):
        tiers = []
        for t in listed:
            rng = t["range"]
            top = _int_or_none(rng[1]) if isinstance(rng, list) and len(rng) == 2 else None
            inp, out = _per_million(t.get("input_cost_per_token")), _per_million(t.get("output_cost_per_token"))
            if top is None or inp is None:
                return None
            tiers.append({"up_to": top, "input": inp, "output": out if out is not None else Decimal(0),
                          "cached_input": _per_million(t.get("cache_read_input_token_cost")),
                          "cache_write": _per_million(t.get("cache_creation_input_token_cost"))})
        return tiers
    above: dict[int, dict[str, Decimal]] = {}
    for key, value in item.items():
        m = _ABOVE_RE.match(key)
        if m and (d := _per_million(value)) is not None:
            threshold = int(m.group(2)) * (1000 if m.group(3) else 1)  # `_above_128k_` or `_above_128000_`
            above.setdefault(threshold, {})[_TIER_FIELD[m.group(1)]] = d
    if not above:
        return None
    # Base prices apply up to the first threshold; each "above N" price up to the next threshold. The last
    # tier reaches the context window (pricing applies the last tier to anything longer anyway).
    base = {field: _per_million(item.get(key)) for key, field in _TIER_FIELD.items()}
    thresholds = sorted(above)
    tops = thresholds[1:] + [max(max_input or 0, thresholds[-1] + 1)]
    tiers = [{"up_to": thresholds[0], **base}]
    for threshold, top in zip(thresholds, tops):
        # A cache price quoted for the base input does not carry over to a tier that changes the input price.
        prices = {**base, **{k: None for k in _CACHE_FIELDS}, **above[threshold]}
        tiers.append({"up_to": top, **prices})
    if any(t["input"] is None for t in tiers):
        return None
    for t in tiers:
        t["output"] = t["output"] if t["output"] is not None else Decimal(0)
    return tiers


def _usd_per_million_entry(name: str, inp: Decimal | None, out: Decimal | None, cached: Decimal | None,
                           written: Decimal | None, tiers: list[dict[str, Any]] | None, context: int | None,
                           max_out: int | None) -> PriceEntry:
    fields = {"currency": "USD", "per": "1M", "input": inp,
              # LiteLLM omits output prices for embedding models: nothing is generated, so nothing is charged.
              "output": out if out is not None else Decimal(0),
              "cached_input": cached, "cache_write": written, "tiers": tiers or [], "off_peak": []}
    return PriceEntry(name, fields, name, context_window=context, max_output_tokens=max_out)


def parse_litellm(text: str) -> PriceFile:
    """LiteLLM's `model_prices_and_context_window.json`: {name: {input_cost_per_token, ...}} in USD per token."""
    data = _json_exact(text)
    if not isinstance(data, dict):
        raise BadRequest("expected LiteLLM's price map: an object of model name -> prices")
    entries, skipped = [], []
    for name, item in data.items():
        if name == "sample_spec" or not isinstance(item, dict):
            continue
        max_input = _int_or_none(item.get("max_input_tokens"))
        tiers = _litellm_tiers(item, max_input)
        inp = _per_million(item.get("input_cost_per_token"))
        if inp is None and tiers:  # some maps give only `tiered_pricing`: the first tier is the base price
            inp = tiers[0]["input"]
        if inp is None:
            skipped.append((name, "no input_cost_per_token (not priced per token)"))
            continue
        out = _per_million(item.get("output_cost_per_token"))
        cached = _per_million(item.get("cache_read_input_token_cost"))
        written = _per_million(item.get("cache_creation_input_token_cost"))
        if tiers and item.get("output_cost_per_token") is None:
            out, cached = tiers[0]["output"], cached if cached is not None else tiers[0]["cached_input"]
            written = written if written is not None else tiers[0]["cache_write"]
        entries.append(_usd_per_million_entry(name, inp, out, cached, written, tiers, max_input,
                                              _int_or_none(item.get("max_output_tokens"))))
    return PriceFile("litellm", tuple(entries), skipped=tuple(skipped))


def parse_openrouter(text: str) -> PriceFile:
    """OpenRouter's `GET /api/v1/models`: {"data": [{id, pricing: {prompt, completion, input_cache_read,
    input_cache_write}, ...}]}."""
    data = _json_exact(text)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BadRequest("expected OpenRouter's model listing: an object with a `data` list")
    entries, skipped = [], []
    for i, item in enumerate(items):
        name = item.get("id") if isinstance(item, dict) else None
        if not isinstance(name, str):
            skipped.append((f"data[{i}]", "no id"))
            continue
        pricing = item.get("pricing") or {}
        inp, out = _per_million(pricing.get("prompt")), _per_million(pricing.get("completion"))
        if inp is None or out is None or inp < 0 or out < 0:  # "-1" marks a router with no fixed price
            skipped.append((name, "no fixed per-token price"))
            continue
        top = item.get("top_provider") or {}
        entries.append(_usd_per_million_entry(
            name, inp, out, _per_million(pricing.get("input_cache_read")),
            _per_million(pricing.get("input_cache_write")), None,
            _int_or_none(item.get("context_length")), _int_or_none(top.get("max_completion_tokens"))))
    return PriceFile("openrouter", tuple(entries), skipped=tuple(skipped))


# --------------------------------------------------------------------------------------------------- matching

def price_keys(config: Config, dep: DeploymentConfig) -> list[str]:
    """The names a deployment answers to in LiteLLM/OpenRouter files, in order of preference."""
    if dep.price_key:
        return [dep.price_key]
    upstream = dep.upstream_model or dep.model
    prefix = config.providers[dep.provider].litellm_provider or dep.provider
    return [f"{prefix}/{upstream}", upstream]


def match(file: PriceFile, config: Config) -> tuple[dict[DeploymentKey, PriceEntry], list[PriceEntry]]:
    """Entries that price a configured deployment (by deployment), and the entries that price none."""
    matched: dict[DeploymentKey, PriceEntry] = {}
    if file.format == "gateway":
        known = {(d.provider, d.model) for d in config.deployments}
        unmatched = []
        for e in file.entries:
            dkey = (e.provider or "", e.model or "")
            if dkey in known:
                matched[dkey] = e
            else:
                unmatched.append(e)
        return matched, unmatched
    by_name = {e.name: e for e in file.entries}
    used: set[str] = set()
    for dep in config.deployments:
        for key in price_keys(config, dep):
            if key in by_name:
                matched[(dep.provider, dep.model)] = by_name[key]
                used.add(key)
                break
    return matched, [e for e in file.entries if e.name not in used]


# -------------------------------------------------------------------------------------------------- rendering

def dec(value: Decimal) -> str:
    """A decimal written out in full (no exponent), so JSON clients read back the same number."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else dec(value)


def price_fields(price: Price) -> dict[str, Any]:
    """A `Price` in the gateway's format (the config's `price:` shape), decimals as strings. `cache_write` is
    optional in that shape (most vendors bill no cache writes): written only where set."""
    out: dict[str, Any] = {
        "currency": price.currency,
        "per": {1_000: "1K", 1_000_000: "1M"}.get(price.per, str(price.per)),
        "input": dec(price.input),
        "output": dec(price.output),
        "cached_input": _opt(price.cached_input),
    }
    _cache_write(out, price.cache_write)
    if price.tiers:
        out["tiers"] = [_cache_write({"up_to": t.up_to, "input": dec(t.input), "output": dec(t.output),
                                      "cached_input": _opt(t.cached_input)}, t.cache_write) for t in price.tiers]
    if price.off_peak:
        out["off_peak"] = [_cache_write({"from": f"{w.start:%H:%M}", "to": f"{w.end:%H:%M}", "tz": w.tz,
                                         "input": dec(w.input), "output": dec(w.output),
                                         "cached_input": _opt(w.cached_input)}, w.cache_write)
                           for w in price.off_peak]
    return out


def _cache_write(fields: dict[str, Any], value: Decimal | None) -> dict[str, Any]:
    if value is not None:
        fields["cache_write"] = dec(value)
    return fields


def version_document(version: PriceVersion, deployments: Iterable[DeploymentConfig] | None = None) -> dict[str, Any]:
    """The gateway's format for a whole version; with `deployments`, in their order with context and quality."""
    doc: dict[str, Any] = {
        "version": version.version,
        "effective_from": version.effective_from.isoformat(),
        "reporting_currency": version.reporting_currency,
        "fx_rates": {k: dec(v) for k, v in sorted(version.fx_rates.items())},
    }
    rows = []
    if deployments is None:
        for (provider, model), price in version.prices.items():
            rows.append({"provider": provider, "model": model, **price_fields(price)})
    else:
        for d in deployments:
            found = version.prices.get((d.provider, d.model))
            if found is not None:
                rows.append({"provider": d.provider, "model": d.model, **price_fields(found),
                             "context_window": d.context_window, "quality": d.quality})
    doc["prices"] = rows
    return doc


def stored_fields_to_price(fields: Mapping[str, Any]) -> Price:
    """The inverse of `price_fields`, for versions read back from the database (already validated once)."""
    clean = {k: v for k, v in fields.items() if k in PRICE_FIELDS and v is not None}
    return PriceConfig.model_validate(clean).to_price()
