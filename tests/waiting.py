"""Waiting in tests for a state that has no event to await."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds.

    Only for states the library exposes as a property without an event (such
    as ``goaway_received``); anything with an event or future is awaited.

    Raises:
        TimeoutError: The condition did not hold within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
