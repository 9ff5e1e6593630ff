"""The one place the long-lived background tasks of `fixeduser serve` run: none is silently gone.

Each task is a coroutine function that should run until cancelled. When it raises, or returns, the
supervisor logs it, counts it, marks the task unhealthy (/healthz, /metrics) and starts it again
after an exponential backoff (`initial` doubling up to `maximum`). A task that has then run for
`stable_after` seconds without failing is healthy again, and its backoff starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fixeduser.clipping import clip

__all__ = ["Supervisor", "TaskState"]

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


@dataclass
class TaskState:
    name: str
    healthy: bool = True
    failures: int = 0
    last_error: str | None = None
    failed_at: float | None = None  # wall time of the last failure
    retry_in: float = 0.0  # the backoff before the current (or next) restart


class Supervisor:
    def __init__(self, *, initial: float = 1.0, maximum: float = 60.0, stable_after: float = 30.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("the backoff needs 0 < initial <= maximum")
        self._initial, self._maximum, self._stable_after = initial, maximum, stable_after
        self.tasks: dict[str, TaskState] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, factory: TaskFactory) -> None:
        """Run `factory()` as the background task `name`, restarting it whenever it ends."""
        if name in self.tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        self.tasks[name] = TaskState(name)
        self._running[name] = asyncio.create_task(self._keep(self.tasks[name], factory), name=f"supervised:{name}")

    async def _keep(self, state: TaskState, factory: TaskFactory) -> None:
        loop = asyncio.get_running_loop()
        delay = self._initial
        while True:
            began = loop.time()
            # Healthy again once this run has lasted `stable_after` (checked without waking anything).
            stable = loop.call_later(self._stable_after, self._stable, state) if not state.healthy else None
            try:
                await factory()
                error = "returned (a background task must run until stopped)"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: logged, counted, retried
                error = clip(f"{type(exc).__name__}: {exc}")
                log.exception("background task %s failed", state.name, extra={"task": state.name})
            else:
                log.error("background task %s returned", state.name, extra={"task": state.name})
            finally:
                if stable is not None:
                    stable.cancel()
            if loop.time() - began >= self._stable_after:
                delay = self._initial  # it ran well for a while: this is a new failure, not a loop
            state.healthy = False
            state.failures += 1
            state.last_error = error
            state.failed_at = time.time()
            state.retry_in = delay
            log.warning(
                "restarting background task %s in %.1f s",
                state.name,
                delay,
                extra={"task": state.name, "failures": state.failures, "error": error},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._maximum)

    def _stable(self, state: TaskState) -> None:
        state.healthy = True
        log.info("background task %s is running again", state.name, extra={"task": state.name})

    def problems(self) -> list[str]:
        """One line per unhealthy task for /healthz: its name, failures and last error."""
        lines = []
        for state in self.tasks.values():
            if state.healthy:
                continue
            at = datetime.fromtimestamp(state.failed_at or 0, UTC).isoformat(timespec="seconds")
            lines.append(
                f"degraded: background task {state.name} failed {state.failures} time(s), last at {at}:"
                f" {state.last_error}; restarted after {state.retry_in:.1f} s"
            )
        return lines

    async def stop(self) -> None:
        """Cancel every task and wait for it to end."""
        running, self._running = list(self._running.values()), {}
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
