"""Waiting in tests for a condition that something else (a background task, a daemon) makes true: one helper,
in a blocking and an async form, that fails the test saying what it waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Described = str | Callable[[], str]


def _failure(what: Described, within: float) -> AssertionError:
    return AssertionError(f"timed out after {within} s waiting for {what() if callable(what) else what}")


def wait_until(
    condition: Callable[[], object], what: Described = "the condition", *, within: float = 5.0, every: float = 0.05
) -> None:
    """Return once `condition()` holds; fail after `within` seconds, saying `what` (a callable: described then)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            raise _failure(what, within)
        time.sleep(every)


async def until(
    condition: Callable[[], object], what: Described = "the condition", *, within: float = 5.0, every: float = 0.005
) -> None:
    """`wait_until` for coroutines: the event loop keeps running while it waits."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            raise _failure(what, within)
        await asyncio.sleep(every)
