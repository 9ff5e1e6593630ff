"""A built plugin's /healthz and /metrics show a failing background task and an audit log that
cannot be written (no root needed: Quobyte API double, audit log on /dev/full)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fixeduser.app.serve import Plugin
from fixeduser.authz.audit import AUDIT_LINE
from tests.authz.test_audit_backlog import DEV_FULL, record
from tests.deploy.test_control import _get, _serving, quobyte_settings
from tests.quobyte_api import QuobyteApiDouble
from tests.waiting import until


@pytest.fixture
async def plugin(tmp_path: Path) -> AsyncIterator[Plugin]:
    if not DEV_FULL.exists():
        pytest.skip("needs /dev/full")
    api = QuobyteApiDouble(client_dir=tmp_path / "client").start()
    (tmp_path / "audit.jsonl").symlink_to(DEV_FULL)
    settings = quobyte_settings(tmp_path, api, audit_log=tmp_path / "audit.jsonl")
    try:
        async with _serving(settings) as built:
            yield built
    finally:
        api.stop()


async def test_healthz_and_metrics_name_a_failing_task_and_it_recovers(plugin: Plugin) -> None:
    control = plugin.settings.control_socket
    supervisor = plugin.supervisor
    supervisor._initial, supervisor._maximum, supervisor._stable_after = 0.01, 0.02, 0.1
    failing = asyncio.Event()
    failing.set()

    async def pruner() -> None:
        if failing.is_set():
            raise ConnectionError("the daemon is gone")
        await asyncio.Event().wait()

    supervisor.start("ledger pruner", pruner)
    await until(lambda: supervisor.tasks["ledger pruner"].failures >= 2)
    status, body = await _get(control, "/healthz")
    assert status == 503, body
    [problem] = json.loads(body)["problems"]
    assert "background task ledger pruner failed" in problem and "ConnectionError: the daemon is gone" in problem
    status, text = await _get(control, "/metrics")
    assert 'fixeduser_task_healthy{task="ledger pruner"} 0.0' in text
    assert 'fixeduser_task_failures_total{task="ledger pruner"}' in text
    status, body = await _get(control, "/status")
    assert json.loads(body)["background_tasks"]["ledger pruner"]["healthy"] is False

    failing.clear()
    await until(lambda: supervisor.tasks["ledger pruner"].healthy)
    assert (await _get(control, "/healthz"))[0] == 200
    assert 'fixeduser_task_healthy{task="ledger pruner"} 1.0' in (await _get(control, "/metrics"))[1]


async def test_healthz_reports_an_unwritable_audit_log_and_the_drops_once_it_is_back(plugin: Plugin) -> None:
    control = plugin.settings.control_socket
    auditor, log = plugin.auditor, plugin.settings.audit_log
    assert log is not None
    auditor._max_lines = 2
    for i in range(5):
        auditor.record(record(i))
    assert await auditor.flush() is False
    status, body = await _get(control, "/healthz")
    assert status == 503, body
    [problem] = json.loads(body)["problems"]
    assert f"the audit log {log} cannot be written" in problem and "3 dropped" in problem
    text = (await _get(control, "/metrics"))[1]
    assert "fixeduser_audit_dropped_records_total 3.0" in text and "fixeduser_audit_writable 0.0" in text
    assert "fixeduser_audit_backlog_lines 2.0" in text

    log.unlink()  # space returns (the writer reopens the path)
    assert await auditor.flush() is True
    status, body = await _get(control, "/healthz")
    assert status == 200, body
    assert json.loads(body)["notes"] == ["3 audit records were dropped since the start (see the audit log)"]
    assert [r.action for r in map(AUDIT_LINE.validate_json, log.read_text().splitlines())][-1] == "audit.dropped"
