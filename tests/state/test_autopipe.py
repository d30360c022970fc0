"""Auto-pipelining: concurrent requests' Redis commands share one pipeline per loop pass, each caller gets its own
reply or error, a lost connection fails the whole batch, and scripts survive a Redis that forgot them."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError

from gateway.state.autopipe import AutoPipeline


async def test_fifty_concurrent_commands_go_out_in_a_few_pipelines_each_with_its_own_reply(
        client: aioredis.Redis, redis_prefix: str) -> None:
    pipe = AutoPipeline(client)
    replies = await asyncio.gather(*[pipe.call("INCRBY", f"{redis_prefix}n{i % 5}", i) for i in range(50)])
    assert pipe.batches <= 3  # one lone command out at once, the rest batched behind it
    totals = {i: 0 for i in range(5)}
    expected = []
    for i in range(50):
        totals[i % 5] += i
        expected.append(totals[i % 5])
    assert sorted(replies) == sorted(expected)
    assert [int(await client.get(f"{redis_prefix}n{k}")) for k in range(5)] == [totals[k] for k in range(5)]


async def test_an_error_reply_reaches_only_its_own_caller(client: aioredis.Redis, redis_prefix: str) -> None:
    pipe = AutoPipeline(client)
    await client.set(f"{redis_prefix}text", "not a number")
    results = await asyncio.gather(pipe.call("INCR", f"{redis_prefix}a"), pipe.call("INCR", f"{redis_prefix}text"),
                                   pipe.call("INCR", f"{redis_prefix}b"), return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ResponseError)


async def test_a_connection_that_fails_fails_every_command_of_the_batch() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    pipe = AutoPipeline(down)
    try:
        results = await asyncio.gather(*[pipe.call("PING") for _ in range(5)], return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
        fut = pipe.send("PING")  # not awaited by anyone yet: still resolved with the error
        await pipe.drain()
        assert isinstance(fut.exception(), RedisConnectionError)
    finally:
        await down.aclose()


async def test_a_script_is_loaded_again_after_redis_forgot_it(client: aioredis.Redis, redis_prefix: str) -> None:
    pipe = AutoPipeline(client)
    script = pipe.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=[f"{redis_prefix}s"], args=[2]) == 2
    await client.script_flush()
    assert await script(keys=[f"{redis_prefix}s"], args=[3]) == 5
    assert await asyncio.gather(*[script(keys=[f"{redis_prefix}s"], args=[1]) for _ in range(10)]) == list(
        range(6, 16))
