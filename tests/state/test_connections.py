"""The request path's Redis connections (gateway/state/connections.py), against real Redis: replies stay in step
with their callers whatever goes wrong, connections are reused, bounded, and replaced when the server drops them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.state.connections import RedisConnections


async def test_a_pipeline_answers_in_order_and_an_error_reply_keeps_the_connection(
        client: aioredis.Redis, redis_prefix: str) -> None:
    conns = RedisConnections(client)
    try:
        k = redis_prefix + "s"
        replies = await conns.execute([("SET", k, "v"), ("HGET", k, "f"), ("GET", k)])
        assert replies[0] is True or replies[0] == b"OK"
        assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
        assert replies[2] == b"v"
        with pytest.raises(ResponseError):
            await conns.call("HGET", k, "f")
        assert await conns.call("GET", k) == b"v"
        assert conns._open == 1  # one connection served every call
    finally:
        await conns.close()


async def test_a_call_cut_short_by_its_deadline_never_hands_its_reply_to_the_next_caller(
        client: aioredis.Redis, redis_prefix: str) -> None:
    conns = RedisConnections(client)
    try:
        k, empty = redis_prefix + "k", redis_prefix + "empty"
        await conns.call("SET", k, "mine")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await conns.call("BLPOP", empty, "0.3")  # its reply (nil) would come 0.3 s later
        await client.rpush(empty, "late")  # had the BLPOP stayed on its connection, it would take this
        assert await conns.call("GET", k) == b"mine"
        assert await client.lrange(empty, 0, -1) == [b"late"]
    finally:
        await conns.close()


async def test_a_connection_the_server_dropped_is_replaced(client: aioredis.Redis) -> None:
    conns = RedisConnections(client)
    try:
        name = f"conns-test-{uuid.uuid4().hex[:8]}"
        assert await conns.call("CLIENT", "SETNAME", name)
        await client.client_kill_filter(_type=None, skipme=True, laddr=None, _id=await conns.call("CLIENT", "ID"))
        await asyncio.sleep(0.05)  # the close reaches this process
        assert await conns.call("PING") in (True, b"PONG")  # on a new connection, not an error
        assert await conns.call("CLIENT", "GETNAME") is None
    finally:
        await conns.close()


async def test_at_most_max_connections_are_opened_and_the_rest_wait(client: aioredis.Redis, redis_prefix: str) -> None:
    conns = RedisConnections(client, max_connections=2)
    try:
        empty = redis_prefix + "wait"
        replies = await asyncio.gather(*(conns.call("BLPOP", empty, "0.05") for _ in range(6)))
        assert replies == [None] * 6 and conns._open == 2
    finally:
        await conns.close()


async def test_a_script_redis_does_not_hold_is_loaded_and_run(client: aioredis.Redis, redis_prefix: str) -> None:
    conns = RedisConnections(client)
    try:
        # A script no one has loaded (its text is unique): EVALSHA answers NOSCRIPT first.
        script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
        assert await conns.evalsha(script, [redis_prefix + "n"], []) == 1
        assert await conns.evalsha(script, [redis_prefix + "n"], []) == 2
    finally:
        await conns.close()
