"""Bounded polling, the tests' way to wait for what another task or service
does (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time


async def until(check, what: str = "condition", timeout: float = 20.0, interval: float = 0.05):
    """check()'s first truthy value (check may be a plain or a coroutine
    function), polled every `interval` seconds; AssertionError naming `what`
    once `timeout` seconds passed."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
