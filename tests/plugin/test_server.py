"""The plugin transport on a real unix socket: what the daemon's plugin client sends, and what it gets back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fixeduser.plugin.server import CONTENT_TYPE, PluginCalls, SocketServer


async def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {"Err": "", "Got": sorted(payload), "Size": len(payload.get("Blob", ""))}


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    server = SocketServer(PluginCalls(["VolumeDriver"], {"VolumeDriver.Echo": echo}), tmp_path / "p.sock")
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


# ---------------------------------------------------------------------------- HTTP on the socket, byte by byte


async def slow_then_echo(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(payload.get("Sleep", 0)))
    if payload.get("Fail"):
        raise RuntimeError("handler broke")
    return {"Err": "", "Seen": payload.get("N")}


@pytest.fixture
async def raw_server(tmp_path: Path) -> AsyncIterator[Path]:
    calls = PluginCalls(["VolumeDriver"], {"VolumeDriver.Echo": slow_then_echo})
    server = SocketServer(calls, tmp_path / "raw.sock")
    await server.start()
    yield tmp_path / "raw.sock"
    await server.stop()


def request(body: bytes, *, path: str = "/VolumeDriver.Echo", method: str = "POST", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def read_reply(reader: asyncio.StreamReader, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status_line, *lines = head.strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = b"" if head_only else await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def test_pipelined_calls_are_answered_in_order_on_one_connection(raw_server: Path) -> None:
    """The first call is slow, the second fast: answers still come in request order."""
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(request(b'{"N": 1, "Sleep": 0.2}') + request(b'{"N": 2}'))
    first, second = await read_reply(reader), await read_reply(reader)
    assert (first[0], json.loads(first[2])) == (200, {"Err": "", "Seen": 1})
    assert (second[0], json.loads(second[2])) == (200, {"Err": "", "Seen": 2})
    assert first[1]["content-type"] == CONTENT_TYPE and "connection" not in first[1]
    writer.write(request(b'{"N": 3}'))  # the connection stays open for the next call
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 3}
    writer.close()


async def test_a_chunked_body_is_read_whole(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(b"POST /VolumeDriver.Echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"N\":\r\n3\r\n 7}\r\n0\r\n\r\n")
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 7}
    writer.close()


async def test_a_body_over_the_limit_is_refused_unread_and_the_connection_closed(
    raw_server: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []

    async def record(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        return {"Err": ""}

    monkeypatch.setattr("fixeduser.plugin.server.MAX_BODY", 1000)
    server = SocketServer(PluginCalls(["VolumeDriver"], {"VolumeDriver.Echo": record}), tmp_path / "small.sock")
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "small.sock"))
        writer.write(request(b'{"N": 1}') + request(json.dumps({"Blob": "A" * 2000}).encode()) + request(b"{}"))
        assert (await read_reply(reader))[0] == 200
        status, headers, body = await read_reply(reader)
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body) == {"Err": "request body over 1000 bytes"}
        assert await reader.read() == b""  # closed: the call after it is never read
        assert seen == [{"N": 1}]
    finally:
        await server.stop()


async def test_a_request_that_is_not_http_gets_400_and_the_connection_closes(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(b"\x16\x03\x01 hello there\r\n\r\n")
    status, headers, body = await read_reply(reader)
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body)["Err"].startswith("bad HTTP request")
    assert await reader.read() == b""


async def test_oversized_headers_are_refused(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(request(b"{}", extra="X-Pad: " + "a" * (70 * 1024) + "\r\n"))
    status, _, body = await read_reply(reader)
    assert status == 431 and "request head over" in json.loads(body)["Err"]


async def test_a_failing_handler_gets_500_and_the_connection_keeps_working(
    raw_server: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(request(b'{"Fail": true}'))
    status, _, body = await read_reply(reader)
    assert status == 500 and json.loads(body) == {"Err": "/VolumeDriver.Echo failed; see the plugin log"}
    assert "plugin call failed" in caplog.text and "handler broke" in caplog.text
    writer.write(request(b'{"N": 4}'))
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 4}
    writer.close()


async def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(raw_server: Path) -> None:
    for raw in (request(b'{"N": 5}').replace(b"HTTP/1.1", b"HTTP/1.0"),
                request(b'{"N": 5}', extra="Connection: close\r\n")):
        reader, writer = await asyncio.open_unix_connection(str(raw_server))
        writer.write(raw)
        status, headers, body = await read_reply(reader)
        assert (status, headers["connection"], json.loads(body)) == (200, "close", {"Err": "", "Seen": 5})
        assert await reader.read() == b""


async def test_head_gets_the_status_without_a_body(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(request(b"", method="HEAD") + request(b'{"N": 6}'))
    status, headers, _ = await read_reply(reader, head_only=True)
    assert status == 405 and int(headers["content-length"]) > 0
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 6}  # no stray body in between
    writer.close()


async def test_stopping_lets_a_call_in_flight_finish_and_answer(tmp_path: Path) -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def mount(payload: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        finished.append(payload["Name"])
        return {"Err": "", "Mountpoint": "/m"}

    server = SocketServer(PluginCalls(["VolumeDriver"], {"VolumeDriver.Mount": mount}), tmp_path / "s.sock")
    await server.start()
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
    idle_reader, _ = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
    writer.write(request(b'{"Name": "v"}', path="/VolumeDriver.Mount"))
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done() and not (tmp_path / "s.sock").exists()  # no new connections meanwhile
    release.set()
    status, _, body = await read_reply(reader)
    assert (status, json.loads(body)) == (200, {"Err": "", "Mountpoint": "/m"}) and finished == ["v"]
    await asyncio.wait_for(stopping, 5)
    assert await idle_reader.read() == b"" and await reader.read() == b""  # every connection closed
