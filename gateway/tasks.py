"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, retry_s: float = 0.2) -> None:
    """Cancel `task` and return once it has ended.

    One `cancel()` is not always enough: redis-py can swallow a CancelledError that lands inside its internal
    read timeout (redis/redis-py#2551), and a pub/sub loop then carries on. So cancel again until it is done.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
