"""Waiting on a condition with a deadline: the one polling loop the harness uses where no event
exists to wait on (a port opening, a log line, the component's view of a session)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def poll_until(condition: Callable[[], bool | Awaitable[bool]], timeout: float, failure: str,
                     interval: float = 0.02) -> None:
    """Until ``condition()`` is true (it may be async, and may raise to give up at once);
    ``TimeoutError(failure)`` after ``timeout`` seconds. Polling a condition, not a guessed delay."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(failure)
        await asyncio.sleep(interval)
