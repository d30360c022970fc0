"""Who is calling: client keys (contract section 4) and the admin key (section 5).

FastAPI-agnostic apart from `require_admin`, which is a FastAPI dependency. Messages are fixed strings: an unknown
key and a revoked key get the same answer, and nothing about the presented key is ever echoed or logged.
"""

from __future__ import annotations

import hmac
from typing import Mapping

from starlette.requests import Request

from gateway.errors import Unauthorized
from gateway.keys.identity import ANONYMOUS, DEFAULT_TEAM, Identity
from gateway.keys.store import KeyStore

INVALID_KEY = "Invalid API key. Send a gateway key as 'Authorization: Bearer <key>' (or 'x-api-key: <key>')."
MISSING_KEY = "Missing API key. Send a gateway key as 'Authorization: Bearer <key>' (or 'x-api-key: <key>')."
ADMIN_ONLY = "This endpoint requires the admin key as 'Authorization: Bearer <admin key>'."


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for k, v in headers.items():  # plain dicts are case-sensitive; HTTP headers are not
        if k.lower() == lowered:
            return v
    return None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive), else None."""
    value = _header(headers, "authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def client_token(headers: Mapping[str, str]) -> str | None:
    """A client's key: a bearer token, else `x-api-key` (how the Anthropic SDKs send theirs)."""
    token = bearer_token(headers)
    if token is None:
        value = _header(headers, "x-api-key")
        token = value.strip() or None if value is not None else None
    return token


class Authenticator:
    def __init__(self, store: KeyStore, *, require_api_key: bool) -> None:
        self._store = store
        self._require = require_api_key

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The caller's identity; raises Unauthorized when a key is required and missing or invalid.

        With `require_api_key: false`, a token that is not a gateway key (an app's OpenAI key) is ignored and the
        request belongs to team `default`. A token that *looks like* a gateway key but is unknown or revoked is
        refused even then: silently billing it to `default` would hide a revoked key still in use.
        """
        token = client_token(headers)
        if token is None:
            if self._require:
                raise Unauthorized(MISSING_KEY)
            return self._anonymous()
        record = await self._store.verify(token)
        if record is None:
            if self._require or self._store.is_gateway_key(token):
                raise Unauthorized(INVALID_KEY)
            return self._anonymous()
        return Identity(team=record.team, key_id=record.id, key_budget=record.budget,
                        team_budget=self._store.team_budget(record.team), rpm=record.rpm, tpm=record.tpm)

    def _anonymous(self) -> Identity:
        budget = self._store.team_budget(DEFAULT_TEAM)
        return ANONYMOUS if budget is None else Identity(team=DEFAULT_TEAM, team_budget=budget)


def check_admin_key(headers: Mapping[str, str], admin_key: str | None) -> None:
    """Raise Unauthorized unless the bearer token is the admin key (constant-time; no admin key: nobody is)."""
    token = bearer_token(headers)
    if not admin_key or token is None or not hmac.compare_digest(token.encode(), admin_key.encode()):
        raise Unauthorized(ADMIN_ONLY)


async def require_admin(request: Request) -> None:
    """FastAPI dependency for /admin routes: the admin key from `request.app.state.services.config`."""
    secret = request.app.state.services.config.gateway.admin_key
    check_admin_key(request.headers, secret.get_secret_value() if secret is not None else None)
