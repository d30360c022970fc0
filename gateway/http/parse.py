"""Turning a client's request (body + headers) into the facts the router needs and the body to forward.

Every forwarded field is checked for type and range by `gateway/http/validate.py` (hand-written checks over the
parsed dict: no pydantic model of whole chat bodies on the hot path); the fields routing needs are read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

import orjson

from gateway.domain import Constraints, Mode, RequestFacts
from gateway.errors import BadRequest
from gateway.http.validate import check_chat, check_embedding, check_model
from gateway.segments import CacheMarks, Segments
from gateway.tokens import TokenCounter

# Fields through which a client could steer where a request goes or whose credentials it uses.
FORBIDDEN_FIELDS = frozenset({"api_base", "api_key", "base_url", "api_version", "organization", "custom_llm_provider",
                              "extra_headers", "extra_body", "azure_ad_token", "aws_access_key_id", "vertex_credentials"})
_CONSTRAINT_KEYS = frozenset({"min_quality", "min_context", "providers", "max_cost"})


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    facts: RequestFacts
    body: dict[str, Any]  # what is forwarded (the `gateway` field removed; model replaced per attempt)
    stream: bool
    client_wants_usage: bool
    api: str = "chat"  # the inbound API (gateway/dialects): the ledger's `api` column
    native: dict[str, Any] | None = None  # the client's own body, for pass-through to a same-dialect vendor
    native_only: tuple[str, ...] = ()  # what of `native` the canonical body cannot carry (pass-through only)
    context: Any = None  # what a translating dialect keeps for its answer (the Responses echo)
    segments: Segments | None = None  # a chat body's messages as the parse measured them (for the prefix cache)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object")
    bad = FORBIDDEN_FIELDS.intersection(obj)
    if bad:
        field = sorted(bad)[0]
        raise BadRequest(f"'{field}' is not accepted: the gateway chooses the upstream and its credentials",
                         param=field)
    return obj


def _constraint_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise BadRequest(f"'{name}' must be a non-negative integer", param=f"gateway.{name}")


def _constraint_money(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRequest(f"'{name}' must be a number", param=f"gateway.{name}")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest(f"'{name}' must be a number", param=f"gateway.{name}") from None
    if not result.is_finite() or result < 0:
        raise BadRequest(f"'{name}' must be a non-negative number", param=f"gateway.{name}")
    return result


def _providers(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, list) and all(isinstance(p, str) for p in value):
        items = [p.strip() for p in value]
    else:
        raise BadRequest("'providers' must be a list of provider names or a comma-separated string",
                         param="gateway.providers")
    allowed = frozenset(p for p in items if p)
    return allowed or None  # an empty header means "no allow-list", not "allow nothing"


_NO_CONSTRAINTS = Constraints()
_HEADER_PREFIX = b"x-gateway-"


def _no_gateway_headers(headers: Mapping[str, str]) -> bool:
    """True when `headers` (Starlette's, whose raw names are lower-case) carry no X-Gateway-* header at all: one
    pass over the raw list instead of four case-insensitive lookups. Other mappings: False (look them up)."""
    raw = getattr(headers, "raw", None)
    if not isinstance(raw, list):
        return False
    for name, _ in raw:
        if name.startswith(_HEADER_PREFIX):
            return False
    return True


def parse_constraints(body_field: Any, headers: Mapping[str, str]) -> Constraints:
    """Constraints from the body's `gateway` object, else from X-Gateway-* headers (the body wins)."""
    if body_field is None:
        if _no_gateway_headers(headers):
            return _NO_CONSTRAINTS
        body_field = {}
    if not isinstance(body_field, dict):
        raise BadRequest("'gateway' must be an object", param="gateway")
    unknown = set(body_field) - _CONSTRAINT_KEYS
    if unknown:
        raise BadRequest(f"unknown gateway option '{sorted(unknown)[0]}'", param="gateway")

    def pick(key: str, header: str) -> Any:
        return body_field[key] if key in body_field else headers.get(header)

    return Constraints(
        min_quality=_constraint_int(pick("min_quality", "x-gateway-min-quality"), "min_quality"),
        min_context=_constraint_int(pick("min_context", "x-gateway-min-context"), "min_context"),
        providers=_providers(pick("providers", "x-gateway-providers")),
        max_cost=_constraint_money(pick("max_cost", "x-gateway-max-cost"), "max_cost"),
    )


def _capabilities(body: Mapping[str, Any]) -> frozenset[str]:
    caps = set()
    if body.get("tools") or body.get("functions"):
        caps.add("tools")
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
        caps.add("json_mode")
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            caps.add("vision")
            break
    return frozenset(caps)


def parse_chat(raw: bytes, headers: Mapping[str, str], counter: TokenCounter, default_output: int) -> ParsedRequest:
    body = parse_json_body(raw)
    check_model(body.get("model"))
    check_chat(body, raw)  # every forwarded field's type and range (gateway/http/validate.py)
    return chat_request(body, headers, counter, default_output, checked=True)


def chat_request(body: dict[str, Any], headers: Mapping[str, str], counter: TokenCounter, default_output: int, *,
                 api: str = "chat", native: dict[str, Any] | None = None, context: Any = None,
                 checked: bool = False, marks: CacheMarks | None = None) -> ParsedRequest:
    """A chat-completions body (the client's, or one a dialect translated to) -> the canonical parsed request.
    Removes the `gateway` field from `body`; a translating dialect removes it from `native` itself. `checked`: the
    client's own chat body, already through `check_chat`; a translated one gets the basic checks here. `marks`: the
    cache_control marks of the client's own body that the translated one cannot carry."""
    if checked:
        model = body["model"]
    else:
        model = check_model(body.get("model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("'messages' must be a non-empty array of message objects", param="messages")
        for name in ("max_completion_tokens", "max_tokens"):
            v = body.get(name)
            if v is not None and (type(v) is not int or v < 0):
                raise BadRequest(f"'{name}' must be a non-negative integer", param=name)
        if not isinstance(body.get("stream", False), bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        if not isinstance(body.get("stream_options") or {}, dict):
            raise BadRequest("'stream_options' must be an object", param="stream_options")
    messages = body["messages"]
    stream = body.get("stream") or False
    opts = body.get("stream_options")
    requested = body.get("max_completion_tokens")
    if requested is None:
        requested = body.get("max_tokens")
    constraints = parse_constraints(body.pop("gateway", None), headers)
    segments = counter.measure(messages, body.get("tools"), marks)  # the estimate, and what the prefix cache hashes
    facts = RequestFacts(
        model=model,
        mode="chat",
        prompt_tokens=segments.total,
        requested_output_tokens=requested,
        expected_output_tokens=requested if requested is not None else default_output,
        capabilities=_capabilities(body),
        constraints=constraints,
    )
    wants_usage = bool(stream and opts and opts.get("include_usage"))
    return ParsedRequest(facts, body, stream, wants_usage, api, native, context=context, segments=segments)


def parse_embedding(raw: bytes, headers: Mapping[str, str], counter: TokenCounter) -> ParsedRequest:
    body = parse_json_body(raw)
    model = check_model(body.get("model"))
    check_embedding(body, raw)
    value = body["input"]
    constraints = parse_constraints(body.pop("gateway", None), headers)
    mode: Mode = "embedding"
    facts = RequestFacts(model=model, mode=mode, prompt_tokens=counter.count_embedding_input(value),
                         requested_output_tokens=None, expected_output_tokens=0, constraints=constraints)
    return ParsedRequest(facts, body, False, False, "embeddings")
