"""The admin key check for every /admin endpoint (constant-time comparison; nothing echoed)."""

from __future__ import annotations

import hmac

from fastapi import Request

from gateway.errors import Unauthorized


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def require_admin(request: Request) -> None:
    admin_key = request.app.state.services.config.gateway.admin_key
    token = bearer_token(request.headers.get("authorization"))
    expected = admin_key.get_secret_value() if admin_key is not None else ""
    if not expected or token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("admin endpoints need Authorization: Bearer <admin_key>")
