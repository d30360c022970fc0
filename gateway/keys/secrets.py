"""Key format and keyed hashing. A client key is `gw-<id>-<secret>`; only HMAC-SHA256(server secret, key) is stored.

Why a keyed hash and not bcrypt: keys are 256-bit random, so a fast hash cannot be brute-forced, and the request
path verifies a key on every call. The HMAC key (the "server secret") means a stolen database alone does not even
let an attacker test guesses offline. It is derived from the configured admin key; rotating it invalidates every
issued client key (documented operator caveat), so operators who rotate the admin key should set a dedicated
secret instead (see `derive_secret`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as _random
from typing import Any

KEY_PREFIX = "gw-"
_ID_BYTES = 6  # 12 hex characters: enough to never collide among issued keys, short in listings
_SECRET_BYTES = 32
_KEY_RE = re.compile(r"^gw-([0-9a-f]{12})-([A-Za-z0-9_-]{20,100})$")
_DERIVATION_LABEL = b"gateway client-key hash v1"
# Used only when neither a hash secret nor an admin key is configured (the embedded demo). Keys stay unguessable
# (256-bit); what is lost is only the offline-guessing protection a secret adds.
_FALLBACK_SECRET = b"gateway-unkeyed-default"


def derive_secret(settings: Any) -> bytes:
    """The HMAC key: from `gateway.key_hash_secret` when the config has one, else from `gateway.admin_key`."""
    for name in ("key_hash_secret", "admin_key"):
        value = getattr(settings, name, None)
        if value is None:
            continue
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        if raw:
            return hmac.new(raw.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()
    return _FALLBACK_SECRET


def new_key() -> tuple[str, str]:
    """A fresh (key_id, full key)."""
    key_id = _random.token_hex(_ID_BYTES)
    return key_id, f"{KEY_PREFIX}{key_id}-{_random.token_urlsafe(_SECRET_BYTES)}"


def parse_key(token: str) -> str | None:
    """The key id if `token` has the shape of a gateway key, else None (e.g. an app's OpenAI key)."""
    m = _KEY_RE.match(token)
    return m.group(1) if m else None


def hash_key(secret: bytes, token: str) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC (~1 us; an HMAC object costs ~5 on every authenticated request)
    return hmac.digest(secret, token.encode(), "sha256").hex()


def matches(secret: bytes, token: str, stored_hash: str) -> bool:
    """Constant-time comparison of the token's hash with the stored one."""
    return hmac.compare_digest(hash_key(secret, token).encode(), stored_hash.encode())
