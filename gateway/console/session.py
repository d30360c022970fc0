"""Console sign-in: a signed, expiring session cookie, and the per-session CSRF token. Pure functions, no I/O.

The cookie is `<payload>.<mac>`: the payload is base64url of `{"sid": random, "exp": unix seconds}`, the MAC an
HMAC-SHA256 under a key derived from the admin key. Deriving it (instead of a random per-process secret) lets every
worker of `gateway serve --workers N` and every replica accept the same session; rotating the admin key signs
everybody out. The admin key itself is never put in the cookie, a page, a URL or a log.

The CSRF token is HMAC(key, "csrf:" + sid): tied to the session, checked on every write (form field or
`X-CSRF-Token` header). With `SameSite=Strict` on the cookie this is defence in depth.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "gw_console"
LIFETIME_S = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    expires: int


def signing_key(admin_key: str) -> bytes:
    return hmac.new(admin_key.encode(), b"gateway-console-session-v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def issue(key: bytes, now: float | None = None, lifetime_s: int = LIFETIME_S) -> tuple[str, Session]:
    """A new session and its cookie value."""
    session = Session(secrets.token_urlsafe(18), int(now if now is not None else time.time()) + lifetime_s)
    payload = _b64(json.dumps({"sid": session.sid, "exp": session.expires}, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload)}", session


def verify(key: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie carries, or None when it is missing, forged, malformed or expired."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac.encode(), _mac(key, payload).encode()):
        return None
    try:
        doc = json.loads(_unb64(payload))
        session = Session(str(doc["sid"]), int(doc["exp"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires <= (now if now is not None else time.time()):
        return None
    return session


def csrf_token(key: bytes, session: Session) -> str:
    return _mac(key, "csrf:" + session.sid)


def csrf_ok(key: bytes, session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented).encode(), csrf_token(key, session).encode())
