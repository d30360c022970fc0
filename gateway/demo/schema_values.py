"""A plausible value for a JSON schema: what the simulated model "writes" in JSON mode and as tool arguments.

Deterministic and valid for the schemas apps send (OpenAI structured outputs, function parameters, pydantic's
`model_json_schema()`): objects (every property, so strict schemas that require all of them hold), arrays
(within minItems/maxItems), strings (enum, const, format date/date-time/email/uri/uuid, min/maxLength), numbers
and integers (within minimum/maximum, exclusive bounds too), booleans, null, `anyOf`/`oneOf`/`allOf`, type
lists such as ["string", "null"], and local `$ref`s into `$defs`/`definitions` (recursion cut off at a depth).
String values follow the property's name (a `city` is a city, taken from the user's text when it names one).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_MAX_DEPTH = 6
_CITY_RE = re.compile(r"\b(?:in|at|for|of)\s+([A-Z][a-z]+(?:\s[A-Z][a-z]+)?)")
_CITIES = ("Beijing", "Shanghai", "Hangzhou", "Shenzhen", "Paris", "London", "Tokyo", "New York")

_BY_NAME: tuple[tuple[tuple[str, ...], str], ...] = (
    (("email",), "ada@example.com"),
    (("url", "uri", "link", "website"), "https://example.com"),
    (("date", "day"), "2024-05-15"),
    (("time",), "2024-05-15T09:30:00Z"),
    (("unit",), "celsius"),
    (("currency",), "CNY"),
    (("country",), "China"),
    (("language", "lang"), "zh"),
    (("name", "title"), "Ada Lovelace"),
    (("id", "uuid"), "5f0c1e2a-8d3b-4c7e-9a61-2b4d6f8e0a13"),
    (("color", "colour"), "blue"),
)


def value_for(schema: Any, hint: str = "", name: str = "", root: Mapping[str, Any] | None = None,
              depth: int = 0) -> Any:
    """A value valid against `schema`; `hint` is the user's text, `name` the property being filled."""
    if not isinstance(schema, Mapping):
        return _string({}, name, hint)
    root = schema if root is None else root
    if "$ref" in schema:
        target = _resolve(schema["$ref"], root)
        return value_for(target, hint, name, root, depth + 1) if depth < _MAX_DEPTH * 2 else None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not _is_null(o)), options[0])
            return value_for(chosen, hint, name, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged = _merge(merged, _resolve(part["$ref"], root) if isinstance(part, Mapping) and "$ref" in part
                            else part)
        return value_for(merged, hint, name, root, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        return _object(schema, hint, root, depth)
    if kind == "array":
        return _array(schema, hint, name, root, depth)
    if kind == "integer":
        return int(_number(schema, name, integer=True))
    if kind == "number":
        return _number(schema, name, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name, hint)


def _kind(schema: Mapping[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if isinstance(t, str):
        return t
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _resolve(ref: Any, root: Mapping[str, Any]) -> Any:
    """A local JSON pointer (#/$defs/X, #/definitions/X); anything else resolves to an empty schema."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _merge(a: Mapping[str, Any], b: Any) -> dict[str, Any]:
    out = dict(a)
    if not isinstance(b, Mapping):
        return out
    for key, value in b.items():
        if key == "properties" and isinstance(value, Mapping):
            out["properties"] = {**out.get("properties", {}), **value}
        elif key == "required" and isinstance(value, list):
            out["required"] = list(dict.fromkeys([*out.get("required", []), *value]))
        else:
            out.setdefault(key, value)
    return out


def _object(schema: Mapping[str, Any], hint: str, root: Mapping[str, Any], depth: int) -> dict[str, Any]:
    found = schema.get("properties")
    props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    required = [r for r in schema.get("required", []) if isinstance(r, str)]
    # Deep in a recursive schema only the required properties, so the value stays finite.
    names = list(dict.fromkeys(required + ([] if depth >= _MAX_DEPTH else list(props))))
    return {n: value_for(props.get(n, {}), hint, n, root, depth + 1) for n in names}


def _array(schema: Mapping[str, Any], hint: str, name: str, root: Mapping[str, Any], depth: int) -> list[Any]:
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    count = max(low if isinstance(low, int) else 0, 0 if depth >= _MAX_DEPTH else 2)
    if isinstance(high, int):
        count = min(count, high)
    items = schema.get("items", {})
    if isinstance(schema.get("prefixItems"), list):
        prefix = schema["prefixItems"]
        return [value_for(s, hint, name, root, depth + 1) for s in prefix[:max(count, len(prefix))]]
    values = [value_for(items, hint, name, root, depth + 1) for _ in range(count)]
    if schema.get("uniqueItems") and len(values) > 1 and len({repr(v) for v in values}) < len(values):
        values = values[:1]
    return values


def _number(schema: Mapping[str, Any], name: str, integer: bool) -> float:
    preferred = {"age": 36, "year": 2024, "count": 3, "quantity": 3, "limit": 10, "price": 0.8,
                 "temperature": 22, "rating": 4}.get(_last_word(name), 42 if integer else 3.5)
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    value: float = preferred
    if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool) and value <= ex_low:
        value = ex_low + step
    if isinstance(low, (int, float)) and not isinstance(low, bool) and value < low:
        value = low
    if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool) and value >= ex_high:
        value = ex_high - step
    if isinstance(high, (int, float)) and not isinstance(high, bool) and value > high:
        value = high
    if integer:
        value = float(int(value)) if value == int(value) else float(int(value) + 1)
    multiple = schema.get("multipleOf")
    if isinstance(multiple, (int, float)) and not isinstance(multiple, bool) and multiple > 0:
        value = (value // multiple) * multiple or multiple
    return value


def _last_word(name: str) -> str:
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())
    return words[-1] if words else ""


def _string(schema: Mapping[str, Any], name: str, hint: str) -> str:
    fmt = schema.get("format")
    by_format = {"date": "2024-05-15", "date-time": "2024-05-15T09:30:00Z", "email": "ada@example.com",
                 "uri": "https://example.com", "url": "https://example.com",
                 "uuid": "5f0c1e2a-8d3b-4c7e-9a61-2b4d6f8e0a13", "time": "09:30:00"}
    if isinstance(fmt, str) and fmt in by_format:
        text = by_format[fmt]
    else:
        text = _string_by_name(name, hint)
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _string_by_name(name: str, hint: str) -> str:
    word = _last_word(name)
    if word in ("city", "location", "place", "destination", "origin", "town"):
        m = _CITY_RE.search(hint)
        if m:
            return m.group(1)
        return next((c for c in _CITIES if c.lower() in hint.lower()), _CITIES[0])
    if word in ("query", "q", "question", "prompt", "text", "input", "message"):
        return hint.strip()[:80] or "price war"
    for words, value in _BY_NAME:
        if word in words:
            return value
    return f"{name or 'value'} for {hint.strip()[:40]}" if hint.strip() else f"sample {name or 'value'}"
