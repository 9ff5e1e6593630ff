"""The plugin transport on a real unix socket: what the daemon's plugin client sends, and what it gets back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fixeduser.plugin.server import CONTENT_TYPE, SocketServer, plugin_app


async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {"Err": "", "Got": sorted(payload), "Size": len(payload.get("Blob", ""))}


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    server = SocketServer(plugin_app(["VolumeDriver"], {"VolumeDriver.Echo": echo}), tmp_path / "p.sock")
    await server.start()
    connector = aiohttp.UnixConnector(path=str(tmp_path / "p.sock"))
    async with aiohttp.ClientSession(connector=connector, base_url="http://plugin") as client:
        yield client
    await server.stop()
    assert not (tmp_path / "p.sock").exists()


async def post(session: aiohttp.ClientSession, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with session.post(path, data=body, headers={"Content-Type": CONTENT_TYPE}) as response:
        assert response.content_type == CONTENT_TYPE
        return response.status, json.loads(await response.read())


async def test_activate_names_what_the_plugin_implements(session: aiohttp.ClientSession) -> None:
    assert await post(session, "/Plugin.Activate", b"") == (200, {"Implements": ["VolumeDriver"]})


async def test_a_call_reaches_its_handler_and_a_large_body_is_accepted(session: aiohttp.ClientSession) -> None:
    """An AuthZ call carries up to 1 MiB of request body, base64-encoded: more than aiohttp's default limit."""
    blob = "A" * (3 * 1024 * 1024)
    status, answer = await post(session, "/VolumeDriver.Echo", json.dumps({"Name": "v", "Blob": blob}).encode())
    assert (status, answer) == (200, {"Err": "", "Got": ["Blob", "Name"], "Size": len(blob)})


async def test_unknown_paths_other_methods_and_bad_bodies_get_a_clear_error(session: aiohttp.ClientSession) -> None:
    status, answer = await post(session, "/VolumeDriver.Nope", b"{}")
    assert status == 404 and "does not implement /VolumeDriver.Nope" in answer["Err"]
    async with session.get("/VolumeDriver.Echo") as response:
        assert response.status == 405 and "takes POST, not GET" in (await response.json(content_type=None))["Err"]
    status, answer = await post(session, "/VolumeDriver.Echo", b"{not json")
    assert status == 400 and answer["Err"].startswith("bad VolumeDriver.Echo request")
    status, answer = await post(session, "/VolumeDriver.Echo", b"[1, 2]")
    assert status == 400 and "must be a JSON object" in answer["Err"]
