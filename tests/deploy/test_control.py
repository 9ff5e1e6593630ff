"""The control socket: /healthz (200 or 503 with problems), /status and /metrics, in-process and live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fixeduser.app.control import HealthReport, control_app
from fixeduser.app.serve import Plugin, build, shutdown
from fixeduser.app.settings import ServeSettings
from tests.quobyte_api import QuobyteApiDouble

REPO = Path(__file__).resolve().parents[2]


async def _client(problems: list[str]) -> TestClient:  # type: ignore[type-arg]
    async def status() -> dict[str, Any]:
        return {"policy": {"version": "v1"}}

    async def health() -> HealthReport:
        return HealthReport(problems=problems)

    client = TestClient(TestServer(control_app(status=status, health=health, metrics=lambda: b"m_total 1.0\n")))
    await client.start_server()
    return client


async def test_healthz_is_200_when_usable() -> None:
    """No problems: 200 with ok true."""
    client = await _client([])
    try:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"ok": True, "problems": [], "notes": []}
    finally:
        await client.close()


async def test_healthz_is_503_with_every_problem() -> None:
    """A policy or backend problem: 503 listing each problem, for load balancers and systemd/compose checks."""
    problems = ["policy.csv:3: unknown action", "backend local: bindfs not found"]
    client = await _client(problems)
    try:
        response = await client.get("/healthz")
        assert response.status == 503
        assert await response.json() == {"ok": False, "problems": problems, "notes": []}
    finally:
        await client.close()


async def test_metrics_route_serves_prometheus_text() -> None:
    """GET /metrics answers the exposition with Prometheus' text content type."""
    client = await _client([])
    try:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert await response.text() == "m_total 1.0\n"
    finally:
        await client.close()


# --------------------------------------------------------------------------- a live plugin (root)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Plugin, Path]]:
    """A built and serving plugin in this process, with private sockets and storage."""
    if os.geteuid() != 0 or shutil.which("bindfs") is None:
        pytest.skip("needs root and bindfs")
    from fixeduser.sandbox import make_private_dir  # noqa: PLC0415 - root-only helper

    base = make_private_dir(tmp_path)
    shutil.copytree(REPO / "policies", base / "policies")
    (base / "storage").mkdir(mode=0o711)
    settings = ServeSettings(
        policy_dir=base / "policies",
        state_dir=base / "state",
        plugin_dir=base / "plugins",
        local_root=base / "storage" / "volumes",
        docker_host=f"unix://{base}/no-docker.sock",
        audit_log=base / "audit.jsonl",
    )
    async with _serving(settings) as plugin:
        try:
            yield plugin, base
        finally:
            (base / "storage").chmod(0o711)  # a test may have made it unusable; shutdown needs it back


@contextlib.asynccontextmanager
async def _serving(settings: ServeSettings) -> AsyncIterator[Plugin]:
    """The plugin built from `settings`, its sockets serving, shut down afterwards."""
    plugin = await build(settings)
    for server in plugin.servers:
        await server.start()
    try:
        yield plugin
    finally:
        await shutdown(plugin, [])


async def _get(socket: Path, path: str, payload: dict[str, Any] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session:
        method = session.post if payload is not None else session.get
        async with method(f"http://plugin{path}", data=json.dumps(payload) if payload else None) as response:
            return response.status, await response.text()


async def test_live_metrics_count_decisions_and_health_sees_a_broken_backend(live: tuple[Plugin, Path]) -> None:
    """A real decision shows in /metrics; storage that non-root views cannot reach turns /healthz to 503."""
    plugin, base = live
    control = plugin.settings.control_socket
    assert (await _get(control, "/healthz"))[0] == 200
    authz = plugin.settings.socket(plugin.settings.authz_name)
    request = {"User": "alice", "UserAuthNMethod": "TLS", "RequestMethod": "GET", "RequestUri": "/v1.41/_ping"}
    status, body = await _get(authz, "/AuthZPlugin.AuthZReq", request)
    assert status == 200, body
    status, text = await _get(control, "/metrics")
    assert status == 200
    assert 'fixeduser_decisions_total{action="' in text
    assert 'fixeduser_decision_seconds_count{phase="request"} 1.0' in text
    assert "fixeduser_policy_reloads_total 0.0" in text
    assert "fixeduser_policy_problems 0.0" in text

    (base / "storage").chmod(0o700)  # bindfs running as a user could no longer reach the volumes
    status, body = await _get(control, "/healthz")
    assert status == 503, body
    assert any("backend local" in problem for problem in json.loads(body)["problems"])
    status, text = await _get(control, "/metrics")
    assert 'fixeduser_backend_errors_total{backend="local",operation="check"} 1.0' in text


async def test_notes_alone_keep_healthz_200() -> None:
    """A report with notes but no problems is usable: 200, the notes in the body."""

    async def status() -> dict[str, Any]:
        return {}

    async def health() -> HealthReport:
        return HealthReport(notes=["the last policy reload failed"])

    client = TestClient(TestServer(control_app(status=status, health=health)))
    await client.start_server()
    try:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"ok": True, "problems": [], "notes": ["the last policy reload failed"]}
    finally:
        await client.close()


async def test_live_rejected_reload_is_a_note_and_the_good_policy_stays(live: tuple[Plugin, Path]) -> None:
    """A broken policy edit: the reload is rejected, /healthz stays 200 and says which version is in force
    and why the edit was refused; once fixed, the note is gone."""
    plugin, base = live
    control = plugin.settings.control_socket
    version = plugin.policy.current.version
    policy_file = base / "policies" / "policy.csv"
    good = policy_file.read_text()
    policy_file.write_text(good + "p, role:eng, api, no.such.action.anywhere\n")
    assert await plugin.policy.reload("test") is False
    status, body = await _get(control, "/healthz")
    assert status == 200, body
    report = json.loads(body)
    assert report["ok"] is True and report["problems"] == []
    assert f"version {version} stays in force" in report["notes"][0]
    assert "policy.csv" in report["notes"][1]
    policy_file.write_text(good)
    assert await plugin.policy.reload("test") is True
    assert json.loads((await _get(control, "/healthz"))[1])["notes"] == []


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(*argv)
    assert await process.wait() == 0, argv


async def test_live_storage_gone_or_read_only_is_503(live: tuple[Plugin, Path]) -> None:
    """The local root vanishing after start (storage unmounted) or turning read-only makes /healthz 503
    with the reason; the check does not paper over a vanished root by creating an empty one."""
    plugin, _ = live
    control = plugin.settings.control_socket
    root = plugin.settings.local_root
    await _run("mount", "--bind", str(root), str(root))
    try:
        await _run("mount", "-o", "remount,bind,ro", str(root))
        status, body = await _get(control, "/healthz")
        assert status == 503, body
        assert any(f"cannot write in {root}" in p and "Read-only" in p for p in json.loads(body)["problems"])
    finally:
        await _run("umount", str(root))
    assert (await _get(control, "/healthz"))[0] == 200
    root.rmdir()
    status, body = await _get(control, "/healthz")
    assert status == 503, body
    assert any("is gone since the plugin started" in p for p in json.loads(body)["problems"])
    assert not root.exists()


@pytest.fixture
async def live_quobyte(tmp_path: Path) -> AsyncIterator[tuple[Plugin, QuobyteApiDouble]]:
    """A serving plugin on the Quobyte backend, against the API double (client mount: a plain folder)."""
    api = QuobyteApiDouble(client_dir=tmp_path / "client").start()
    try:
        async with _serving(quobyte_settings(tmp_path, api)) as plugin:
            yield plugin, api
    finally:
        api.stop()


def quobyte_settings(tmp_path: Path, api: QuobyteApiDouble, **more: Any) -> ServeSettings:
    """Settings of a plugin in `tmp_path` on the Quobyte backend against the API double (client: a plain folder)."""
    (tmp_path / "client").mkdir()
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    (tmp_path / "password").write_text(api.password)
    return ServeSettings(
        policy_dir=tmp_path / "policies",
        state_dir=tmp_path / "state",
        plugin_dir=tmp_path / "plugins",
        backend="quobyte",
        quobyte_api_url=api.url,
        quobyte_user=api.user,
        quobyte_password_file=tmp_path / "password",
        quobyte_client="directory",
        quobyte_mountpoint=tmp_path / "client",
        quobyte_retries=0,
        quobyte_tenant="t1",  # a tenant the API double has
        docker_host=f"unix://{tmp_path}/no-docker.sock",
        **more,
    )


async def test_live_quobyte_api_unreachable_is_503(live_quobyte: tuple[Plugin, QuobyteApiDouble]) -> None:
    """The Quobyte API answering: 200 (one cheap name look-up); the API gone: 503 naming it."""
    plugin, api = live_quobyte
    control = plugin.settings.control_socket
    status, body = await _get(control, "/healthz")
    assert status == 200, body
    assert any(method == "resolveVolumeName" for method, _ in api.calls)
    api.stop()
    status, body = await _get(control, "/healthz")
    assert status == 503, body
    assert any("the Quobyte API is unusable" in p and api.url in p for p in json.loads(body)["problems"])
