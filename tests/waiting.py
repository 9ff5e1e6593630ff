"""Waiting in tests for a condition that a background task makes true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Return once `condition()` holds (checked every 5 ms); fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
