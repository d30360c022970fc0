"""What every console page shares: templates (Jinja2, autoescaped), the session check, CSRF, form parsing,
static assets and security headers.

Signed out, a page (GET asking for HTML) is redirected to the sign-in page; anything else (downloads, writes,
scripts) gets 401. The sign-in page and the two static assets are the only routes served without a session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qs, quote

from fastapi import HTTPException, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from gateway.console import session as S

HERE = Path(__file__).parent
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"),
                        autoescape=select_autoescape(("html",), default=True), trim_blocks=True, lstrip_blocks=True)
STATIC = {name: (HERE / "static" / name).read_bytes() for name in ("console.css", "console.js")}
STATIC_TYPES = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
MAX_FORM_BYTES = 8 * 1024 * 1024  # a whole LiteLLM price map pasted into the import form fits

# Scripts and styles only from the console's own files: an injected <script> or style attribute would not run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGES = (("spend", "Spend"), ("prices", "Prices"), ("playground", "Routing playground"), ("keys", "Keys and teams"),
         ("health", "Health"))


def admin_key(request: Request) -> str | None:
    secret = request.app.state.services.config.gateway.admin_key
    return secret.get_secret_value() if secret is not None else None


def signing_key(request: Request) -> bytes | None:
    key = admin_key(request)
    return S.signing_key(key) if key else None


def current_session(request: Request) -> S.Session | None:
    key = signing_key(request)
    return S.verify(key, request.cookies.get(S.COOKIE)) if key is not None else None


def _wants_page(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


async def require_session(request: Request) -> S.Session:
    """FastAPI dependency for every console route but sign-in: the session, else a redirect or a 401."""
    found = current_session(request)
    if found is not None:
        return found
    if _wants_page(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, headers={"Location": "/console/login?next=" + quote(target, safe="")})
    raise HTTPException(401, detail="sign in to the console first", headers={"WWW-Authenticate": "Cookie"})


def csrf_for(request: Request, session: S.Session) -> str:
    key = signing_key(request)
    assert key is not None  # a session exists, so the admin key does
    return S.csrf_token(key, session)


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (every console form; files are read into a textarea by the
    page's script, so no multipart parser is needed). Last value wins for a repeated name."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, detail="form too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


async def checked_form(request: Request, session: S.Session) -> dict[str, str]:
    """A write's form, refused (403) unless it carries this session's CSRF token."""
    form = await read_form(request)
    key = signing_key(request)
    presented = form.get("csrf") or request.headers.get("x-csrf-token")
    if key is None or not S.csrf_ok(key, session, presented):
        raise HTTPException(403, detail="missing or wrong CSRF token: reload the page and try again")
    return form


def render(request: Request, template: str, session: S.Session | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    page = TEMPLATES.get_template(template).render(
        pages=PAGES, csrf=csrf_for(request, session) if session is not None else "",
        expires=time.strftime("%H:%M UTC", time.gmtime(session.expires)) if session is not None else "",
        **context)
    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404)
    return Response(STATIC[name], media_type=STATIC_TYPES[name],
                    headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})


def query(params: Mapping[str, str], name: str, default: str = "") -> str:
    return (params.get(name) or default).strip()
