"""Client and admin authentication (contract sections 4 and 5)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.decisions.limits import Budget
from gateway.errors import Unauthorized
from gateway.http.auth import Authenticator, bearer_token, check_admin_key
from gateway.keys.store import KeyStore

SECRET = b"k" * 32


def test_bearer_token_parsing() -> None:
    assert bearer_token({"Authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"Authorization": "Basic abc"}) is None
    assert bearer_token({"Authorization": "Bearer "}) is None
    assert bearer_token({}) is None


async def test_required_key(sqlite_engine: AsyncEngine) -> None:
    store = KeyStore(sqlite_engine, SECRET)
    record, key = await store.create_key("search", budget=Budget(Decimal(5), "day"), rpm=10, tpm=100)
    await store.set_team("search", Budget(Decimal(50), "month"))
    auth = Authenticator(store, require_api_key=True)
    who = await auth.authenticate({"Authorization": f"Bearer {key}"})
    assert (who.team, who.key_id, who.rpm, who.tpm) == ("search", record.id, 10, 100)
    assert who.key_budget == Budget(Decimal(5), "day") and who.team_budget == Budget(Decimal(50), "month")
    with pytest.raises(Unauthorized):
        await auth.authenticate({})
    unknown_key = f"gw-{record.id}-{'x' * 43}"
    messages = set()
    for token in ("sk-some-openai-key", unknown_key):
        with pytest.raises(Unauthorized) as e:
            await auth.authenticate({"Authorization": f"Bearer {token}"})
        assert token not in str(e.value)
        messages.add(str(e.value))
    await store.revoke_key(record.id)
    with pytest.raises(Unauthorized) as e:
        await auth.authenticate({"Authorization": f"Bearer {key}"})
    messages.add(str(e.value))
    assert len(messages) == 1  # unknown and revoked keys are indistinguishable
    assert key not in str(e.value) and record.id not in str(e.value)


async def test_optional_key(sqlite_engine: AsyncEngine) -> None:
    store = KeyStore(sqlite_engine, SECRET)
    record, key = await store.create_key("search")
    auth = Authenticator(store, require_api_key=False)
    anon = await auth.authenticate({"Authorization": "Bearer sk-an-openai-key"})
    assert (anon.team, anon.key_id) == ("default", None)
    assert (await auth.authenticate({})).team == "default"
    assert (await auth.authenticate({"Authorization": f"Bearer {key}"})).team == "search"
    await store.set_team("default", Budget(Decimal(1), "day"))
    assert (await auth.authenticate({})).team_budget == Budget(Decimal(1), "day")
    await store.revoke_key(record.id)
    with pytest.raises(Unauthorized):  # a revoked gateway key is refused, not quietly billed to `default`
        await auth.authenticate({"Authorization": f"Bearer {key}"})


def test_admin_key() -> None:
    check_admin_key({"Authorization": "Bearer s3cret"}, "s3cret")
    for headers, admin in [({"Authorization": "Bearer wrong"}, "s3cret"), ({}, "s3cret"),
                           ({"Authorization": "Bearer s3cret"}, None), ({"Authorization": "Bearer "}, "")]:
        with pytest.raises(Unauthorized) as e:
            check_admin_key(headers, admin)
        assert "s3cret" not in str(e.value) and "wrong" not in str(e.value)


def test_key_hash_secret_setting_keeps_hashes_stable_when_the_admin_key_rotates():
    from gateway.config.schema import GatewaySettings
    from gateway.keys.secrets import derive_secret

    before = GatewaySettings(admin_key="admin-1", key_hash_secret="hash-secret")
    after = GatewaySettings(admin_key="admin-2", key_hash_secret="hash-secret")
    assert derive_secret(before) == derive_secret(after)
    assert derive_secret(GatewaySettings(admin_key="admin-1")) != derive_secret(GatewaySettings(admin_key="admin-2"))


async def test_a_client_key_is_accepted_as_x_api_key_as_the_anthropic_sdks_send_it(sqlite_engine: AsyncEngine) -> None:
    store = KeyStore(sqlite_engine, SECRET)
    record, key = await store.create_key("agents")
    auth = Authenticator(store, require_api_key=True)
    assert (await auth.authenticate({"x-api-key": key})).key_id == record.id
    assert (await auth.authenticate({"X-Api-Key": key, "Authorization": "Basic zzz"})).key_id == record.id
    with pytest.raises(Unauthorized):
        await auth.authenticate({"x-api-key": "sk-ant-not-a-gateway-key"})
    with pytest.raises(Unauthorized):
        await auth.authenticate({"x-api-key": "  "})
    # a bearer token wins when both are sent
    with pytest.raises(Unauthorized):
        await auth.authenticate({"Authorization": "Bearer sk-other", "x-api-key": key})
