"""The request path's Redis connection (gateway/state/connections.py), against real Redis: every caller gets its
own replies whatever goes wrong, concurrent calls share one connection and one write, and a connection that
fails or stops answering is replaced."""

from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator
from decimal import Decimal

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.state.connections import RedisConnections, pack
from tests.conftest import REDIS_URL


@pytest.fixture
async def conns(client: aioredis.Redis) -> AsyncIterator[RedisConnections]:
    c = RedisConnections(client)
    yield c
    await c.close()


async def test_a_pipeline_answers_in_order_and_an_error_reply_keeps_the_connection(
        conns: RedisConnections, redis_prefix: str) -> None:
    k = redis_prefix + "s"
    replies = await conns.execute([("SET", k, "v"), ("HGET", k, "f"), ("GET", k)])
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    assert replies[2] == b"v"
    with pytest.raises(ResponseError):
        await conns.call("HGET", k, "f")
    assert await conns.call("GET", k) == b"v"
    assert await conns.execute([]) == []
    assert conns._open == 1  # one connection served every call


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(
        conns: RedisConnections, redis_prefix: str) -> None:
    keys = [f"{redis_prefix}c{i}" for i in range(200)]
    await asyncio.gather(*(conns.call("SET", k, str(i)) for i, k in enumerate(keys)))
    got = await asyncio.gather(*(conns.execute([("GET", k), ("STRLEN", k)]) for k in keys))
    assert got == [[str(i).encode(), len(str(i))] for i in range(200)]
    assert conns._open == 1


async def test_concurrent_calls_of_one_loop_pass_go_out_in_one_write(
        conns: RedisConnections, redis_prefix: str) -> None:
    await conns.call("PING")  # connected
    link = conns._link
    assert link is not None
    writes: list[bytes] = []
    real_write = link._transport.write
    link._transport.write = lambda data: (writes.append(data), real_write(data))  # type: ignore[method-assign]
    replies = await asyncio.gather(*(conns.call("INCR", redis_prefix + "n") for _ in range(20)))
    assert sorted(replies) == list(range(1, 21))
    assert len(writes) == 1 and writes[0].count(b"INCR") == 20


async def test_a_caller_that_gives_up_never_gets_its_reply_handed_to_the_next_caller(
        conns: RedisConnections, redis_prefix: str) -> None:
    k, empty = redis_prefix + "k", redis_prefix + "empty"
    await conns.call("SET", k, "mine")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await conns.call("BLPOP", empty, "0.2")  # its reply (nil) comes 0.2 s later
    # The next caller is answered after it, with its own reply, not the abandoned nil.
    assert await conns.call("GET", k) == b"mine"
    assert conns._open == 1


async def test_a_connection_that_stops_answering_is_closed_at_the_deadline_and_replaced(
        client: aioredis.Redis, redis_prefix: str) -> None:
    conns = RedisConnections(client, deadline_s=0.1)
    try:
        k = redis_prefix + "k"
        await conns.call("SET", k, "v")
        waiting = asyncio.gather(conns.call("BLPOP", redis_prefix + "empty", "1"), conns.call("GET", k),
                                 return_exceptions=True)
        replies = await asyncio.wait_for(waiting, 0.8)  # not the 1 s the BLPOP would hold the connection
        assert all(isinstance(r, RedisTimeoutError) for r in replies)
        assert await conns.call("GET", k) == b"v"  # on a new connection
        assert conns._open == 2
    finally:
        await conns.close()


async def test_a_connection_the_server_dropped_fails_its_calls_and_is_replaced(
        conns: RedisConnections, client: aioredis.Redis, redis_prefix: str) -> None:
    name = f"conns-test-{uuid.uuid4().hex[:8]}"
    assert await conns.call("CLIENT", "SETNAME", name) == b"OK"
    blocked = asyncio.ensure_future(conns.call("BLPOP", redis_prefix + "empty", "2"))
    await asyncio.sleep(0.05)
    (victim,) = [c["id"] for c in await client.client_list() if c["name"] == name]
    await client.client_kill_filter(_id=victim)
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(blocked, 1)
    assert await conns.call("PING") == b"PONG"  # on a new connection, not an error
    assert await conns.call("CLIENT", "GETNAME") is None


async def test_a_server_that_cannot_be_reached_raises_a_connection_error_for_every_waiting_caller() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5, retry_on_error=[], retry=None)
    conns = RedisConnections(down)
    try:
        results = await asyncio.gather(*(conns.call("PING") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results)
    finally:
        await conns.close()
        await down.aclose()


async def test_the_client_url_settings_reach_the_connection(redis_prefix: str) -> None:
    other = aioredis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/14", decode_responses=True)
    conns = RedisConnections(other)
    try:
        await conns.call("SET", redis_prefix + "db", "é")
        assert await other.get(redis_prefix + "db") == "é"  # SELECT 14 was sent
        assert await conns.call("GET", redis_prefix + "db") == "é"  # replies decoded as the client asks
    finally:
        await other.delete(redis_prefix + "db")
        await conns.close()
        await other.aclose()


async def test_a_script_redis_does_not_hold_is_loaded_and_run(
        conns: RedisConnections, client: aioredis.Redis, redis_prefix: str) -> None:
    # A script no one has loaded (its text is unique): EVALSHA answers NOSCRIPT first.
    script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
    assert await conns.evalsha(script, [redis_prefix + "n"], []) == 1
    assert await conns.evalsha(script, [redis_prefix + "n"], []) == 2


@pytest.mark.parametrize("command", [
    ("EVALSHA", "ab" * 20, 2, "gw:k", b"raw\x00bytes", 12, -3, 2.5, 0.1, 1e20, "é€", ""),
    ("SCRIPT LOAD", "return 1"),  # a two-word name: redis-py splits it
    ("SET", "k", memoryview(b"mv")),
])
def test_commands_are_packed_to_the_same_bytes_as_redis_py_packs_them(command: tuple) -> None:
    packer = Connection()
    expected = b"".join(packer.pack_commands([command]))
    assert pack([command, ("PING",)], packer) == expected + hiredis.pack_command(("PING",))


@pytest.mark.parametrize("value", [True, Decimal("1.50"), None])
def test_a_value_redis_py_would_refuse_is_refused_with_its_error(value: object) -> None:
    with pytest.raises(DataError):
        pack([("SET", "k", value)], Connection())


def test_without_a_deadline_of_its_own_a_call_has_the_clients_socket_timeout() -> None:
    assert RedisConnections(aioredis.from_url(REDIS_URL)).deadline_s == 5  # redis-py's default
    assert RedisConnections(aioredis.from_url(REDIS_URL, socket_timeout=1.5)).deadline_s == 1.5
    assert RedisConnections(aioredis.from_url(REDIS_URL), deadline_s=0.5).deadline_s == 0.5


async def test_closing_while_a_connection_is_being_opened_leaves_none_open(client: aioredis.Redis) -> None:
    conns = RedisConnections(client)
    calling = asyncio.ensure_future(conns.call("PING"))
    await asyncio.sleep(0)  # the opening has started
    await conns.close()
    with pytest.raises(RedisConnectionError):
        await calling
    assert conns._link is None
    assert await conns.call("PING") == b"PONG"  # usable again: the next call opens a connection
