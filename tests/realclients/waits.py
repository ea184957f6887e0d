"""Waiting on what a real client did (a row in its archive, a line in its log, a popup, a beep):
the harness's poll_until, failing with what the client showed by then, not before."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mdm_harness.waiting import poll_until


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float, describe: Callable[[], str]) -> None:
    try:
        await poll_until(condition, timeout, "", interval=0.05)
    except TimeoutError:
        raise AssertionError(describe()) from None
