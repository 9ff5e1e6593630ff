"""The control socket: /healthz (200 or 503 with problems), /status and /metrics, in-process and live."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fixeduser.app import Plugin, build, shutdown
from fixeduser.control import control_app
from fixeduser.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]


async def _client(problems: list[str]) -> TestClient:  # type: ignore[type-arg]
    async def status() -> dict[str, Any]:
        return {"policy": {"version": "v1"}}

    async def health() -> list[str]:
        return problems

    client = TestClient(TestServer(control_app(status=status, health=health, metrics=lambda: b"m_total 1.0\n")))
    await client.start_server()
    return client


async def test_healthz_is_200_when_usable() -> None:
    """No problems: 200 with ok true."""
    client = await _client([])
    try:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"ok": True, "problems": []}
    finally:
        await client.close()


async def test_healthz_is_503_with_every_problem() -> None:
    """A policy or backend problem: 503 listing each problem, for load balancers and systemd/compose checks."""
    problems = ["policy.csv:3: unknown action", "backend local: bindfs not found"]
    client = await _client(problems)
    try:
        response = await client.get("/healthz")
        assert response.status == 503
        assert await response.json() == {"ok": False, "problems": problems}
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
    plugin = await build(settings)
    for server in plugin.servers:
        await server.start()
    try:
        yield plugin, base
    finally:
        (base / "storage").chmod(0o711)
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
