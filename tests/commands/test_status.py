"""`fixeduser status`: reads the plugin's control socket and prints tables or JSON."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fixeduser.app.control import HealthReport, control_app
from fixeduser.cli import main

STATUS = {
    "policy": {"version": "abc123", "source": "policies", "reloads": 2, "failed_reloads": 1,
               "last_error": "policy reload rejected (1 problem(s)) ...policy.csv:4: ..."},
    "decisions": {"allow": 10, "deny": 3},
    "mounts_per_identity": {"10001:10000": 2},
    "backend": "local",
    "audit": {"backlog_lines": 7, "backlog_bytes": 2100, "dropped": 3, "last_error": "OSError: [Errno 28] No space"},
    "background_tasks": {"audit writer": {"healthy": True, "failures": 0, "last_error": None},
                         "ledger pruner": {"healthy": False, "failures": 2, "last_error": "RuntimeError: x"}},
    "daemon_asks_fixeduser": {"consulted": False, "since": 1796648153.0, "checks": 4},
}  # fmt: skip


async def _status() -> dict[str, Any]:
    return STATUS


async def _health() -> HealthReport:
    return HealthReport()


async def test_status_over_the_control_socket(capsys: pytest.CaptureFixture[str]) -> None:
    """Human output shows version, the last rejected reload, decisions and mounts; --json the raw snapshot."""
    with tempfile.TemporaryDirectory(prefix="fu-st-") as tmp:
        runner = web.AppRunner(control_app(status=_status, health=_health))
        await runner.setup()
        await web.UnixSite(runner, str(Path(tmp) / "control.sock")).start()
        try:
            assert await asyncio.to_thread(main, ["status", "--state-dir", tmp]) == 0
            out = capsys.readouterr().out
            assert "policy version abc123" in out and "policy.csv:4" in out
            assert "10001:10000" in out and "deny" in out
            assert "audit: 7 lines (2100 bytes) waiting, 3 records dropped; cannot write: OSError" in out
            assert any(line.split()[:4] == ["ledger", "pruner", "NO", "2"] for line in out.splitlines())
            assert "daemon: DOES NOT ASK fixeduser about its requests since 2026-" in out
            assert "it allows every request" in out and "daemon_asks_fixeduser" not in out
            assert await asyncio.to_thread(main, ["status", "--state-dir", tmp, "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["policy"]["version"] == "abc123"
        finally:
            await runner.cleanup()


def test_status_without_a_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No plugin running: exit 2 with one line saying where it looked."""
    assert main(["status", "--state-dir", str(tmp_path)]) == 2
    assert "cannot reach the plugin" in capsys.readouterr().err
