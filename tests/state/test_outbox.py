"""The Redis outbox (gateway/state/outbox.py): writes queued together leave together, each gets its own replies or
the failure, and a script Redis does not hold is loaded and its calls sent again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.state.connections import RedisConnections
from gateway.state.outbox import Command, RedisOutbox, ScriptCall
from tests.conftest import REDIS_URL


@dataclass
class Recorded:
    cmds: list[Command]
    replies: list[Any] | None = None
    error: BaseException | None = None
    explode: bool = False
    log: list[str] = field(default_factory=list)

    def commands(self) -> Sequence[Command]:
        return self.cmds

    def done(self, replies: list[Any]) -> None:
        self.replies = replies
        if self.explode:
            raise RuntimeError("a writer's bug")

    def failed(self, error: BaseException) -> None:
        self.error = error


class Counting(RedisConnections):
    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self.sends: list[int] = []

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        self.sends.append(len(commands))
        return await super().execute(commands)


@pytest.fixture
async def conns() -> AsyncIterator[Counting]:
    client = aioredis.from_url(REDIS_URL)
    c = Counting(client)
    yield c
    await c.close()
    await client.aclose()


async def test_writes_queued_together_go_as_one_pipeline_and_each_gets_its_replies(conns: Counting,
                                                                                   redis_prefix: str) -> None:
    outbox = RedisOutbox(conns)
    writes = [Recorded([("INCRBY", redis_prefix + "n", i), ("GET", redis_prefix + "n")]) for i in range(1, 6)]
    writes[1].explode = True  # one writer's failing callback costs the others nothing
    for w in writes:
        outbox.put(w)
    await outbox.drain()
    assert conns.sends == [10]
    assert [w.replies for w in writes] == [[1, b"1"], [3, b"3"], [6, b"6"], [10, b"10"], [15, b"15"]]


async def test_a_script_redis_does_not_hold_is_loaded_and_only_its_calls_sent_again(conns: Counting,
                                                                                    redis_prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
        outbox = RedisOutbox(conns)
        w = Recorded([("INCR", redis_prefix + "plain"), ScriptCall(script, (redis_prefix + "s",), ())])
        outbox.put(w)
        await outbox.drain()
        assert w.replies == [1, 1]  # the plain command ran once, the script once (after SCRIPT LOAD)
        assert conns.sends == [2, 1, 1]  # the batch, SCRIPT LOAD, the script call again
    finally:
        await client.aclose()


async def test_a_batch_that_cannot_reach_redis_fails_each_write() -> None:
    down = aioredis.Redis(port=1)  # nothing listens on port 1
    outbox = RedisOutbox(RedisConnections(down))
    writes = [Recorded([("PING",)]) for _ in range(3)]
    for w in writes:
        outbox.put(w)
    await outbox.drain()
    assert all(w.replies is None and isinstance(w.error, RedisConnectionError) for w in writes)
    await down.aclose()
