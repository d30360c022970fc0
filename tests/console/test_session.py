"""Console sessions: signed, expiring, tied to the admin key; the CSRF token is tied to the session."""

from __future__ import annotations

from gateway.console import session as S

KEY = S.signing_key("admin-key")


def test_an_issued_cookie_verifies_until_it_expires() -> None:
    cookie, session = S.issue(KEY, now=1000, lifetime_s=60)
    assert S.verify(KEY, cookie, now=1059) == session
    assert S.verify(KEY, cookie, now=1060) is None


def test_a_tampered_forged_or_foreign_cookie_is_refused() -> None:
    cookie, _ = S.issue(KEY, now=1000)
    payload, mac = cookie.split(".")
    longer, _ = S.issue(KEY, now=999_999)
    assert S.verify(KEY, longer.split(".")[0] + "." + mac, now=1001) is None  # someone else's payload, our mac
    assert S.verify(KEY, payload + "." + mac[:-2] + "AA", now=1001) is None
    assert S.verify(S.signing_key("another-admin-key"), cookie, now=1001) is None  # admin key rotated
    for junk in (None, "", "abc", "a.b.c", "!!!.???"):
        assert S.verify(KEY, junk, now=1001) is None


def test_the_cookie_does_not_carry_the_admin_key() -> None:
    cookie, _ = S.issue(KEY)
    assert "admin-key" not in cookie and KEY.hex() not in cookie


def test_csrf_token_belongs_to_one_session() -> None:
    _, one = S.issue(KEY)
    _, two = S.issue(KEY)
    token = S.csrf_token(KEY, one)
    assert S.csrf_ok(KEY, one, token)
    assert not S.csrf_ok(KEY, two, token)
    assert not S.csrf_ok(KEY, one, None) and not S.csrf_ok(KEY, one, "")
