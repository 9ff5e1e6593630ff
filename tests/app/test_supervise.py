"""The supervisor: a background task that fails or returns is logged, counted, retried with a bounded
exponential backoff, reported unhealthy, and healthy again once it runs."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from fixeduser.app.metrics import Metrics
from fixeduser.app.supervise import Supervisor
from tests.authz.test_audit_backlog import make_auditor
from tests.waiting import until


async def test_a_failing_task_is_retried_and_healthy_again(caplog: pytest.LogCaptureFixture) -> None:
    """Two failures: each logged with its traceback, counted, in problems(); the third run lasts and
    the task is healthy again, its problem gone."""
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise OSError(28, "No space left on device")
        await asyncio.Event().wait()

    supervisor = Supervisor(initial=0.01, maximum=0.04, stable_after=0.05)
    caplog.set_level(logging.INFO, logger="fixeduser.app.supervise")
    supervisor.start("audit writer", flaky)
    state = supervisor.tasks["audit writer"]
    try:
        await until(lambda: state.failures == 2)
        assert not state.healthy
        [problem] = supervisor.problems()
        assert "audit writer" in problem and "failed 2 time(s)" in problem
        assert "OSError: [Errno 28] No space left on device" in problem
        await until(lambda: state.healthy)
        assert calls == 3 and supervisor.problems() == []
        failures = [r for r in caplog.records if r.getMessage() == "background task audit writer failed"]
        assert len(failures) == 2 and all(r.exc_info for r in failures)
        assert any(r.getMessage() == "background task audit writer is running again" for r in caplog.records)
    finally:
        await supervisor.stop()


async def test_backoff_doubles_up_to_its_maximum() -> None:
    """A task that always fails is restarted after 0.01, 0.02, 0.04, 0.04, ... seconds: never faster,
    never slower than the maximum."""
    starts: list[float] = []

    async def broken() -> None:
        starts.append(time.monotonic())
        raise RuntimeError("broken")

    supervisor = Supervisor(initial=0.01, maximum=0.04, stable_after=10)
    supervisor.start("pruner", broken)
    try:
        await until(lambda: len(starts) >= 6)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        for gap, expected in zip(gaps, (0.01, 0.02, 0.04, 0.04, 0.04), strict=False):
            assert expected <= gap < expected + 0.5, gaps
        assert supervisor.tasks["pruner"].retry_in == 0.04
    finally:
        await supervisor.stop()


async def test_a_task_that_returns_is_not_silently_gone() -> None:
    """Returning counts as a failure (a background task must run until stopped), and it runs again."""
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1

    supervisor = Supervisor(initial=0.01, maximum=0.01, stable_after=10)
    supervisor.start("watcher", returns)
    try:
        await until(lambda: runs >= 3)
        state = supervisor.tasks["watcher"]
        assert state.failures >= 2 and not state.healthy
        assert state.last_error is not None and "returned" in state.last_error
    finally:
        await supervisor.stop()


async def test_stop_cancels_every_task_and_names_are_unique() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    supervisor = Supervisor()
    supervisor.start("one", forever)
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start("one", forever)
    await asyncio.sleep(0)
    await supervisor.stop()
    assert cancelled.is_set()
    with pytest.raises(ValueError):
        Supervisor(initial=0)


async def test_metrics_show_failures_per_task_and_health(tmp_path: object) -> None:
    """fixeduser_task_failures_total and fixeduser_task_healthy, one series per task."""
    metrics = Metrics()
    supervisor = Supervisor(initial=0.01, maximum=0.01, stable_after=10)

    async def broken() -> None:
        raise RuntimeError("x")

    async def fine() -> None:
        await asyncio.Event().wait()

    auditor = make_auditor(None)
    metrics.watch_background(supervisor, auditor)
    supervisor.start("broken", broken)
    supervisor.start("fine", fine)
    try:
        await until(lambda: supervisor.tasks["broken"].failures >= 2)
        text = metrics.render().decode()
        assert 'fixeduser_task_healthy{task="broken"} 0.0' in text
        assert 'fixeduser_task_healthy{task="fine"} 1.0' in text
        assert 'fixeduser_task_failures_total{task="fine"} 0.0' in text
        assert 'fixeduser_task_failures_total{task="broken"}' in text
        assert "fixeduser_audit_dropped_records_total 0.0" in text
        assert "fixeduser_audit_writable 1.0" in text
    finally:
        await supervisor.stop()
