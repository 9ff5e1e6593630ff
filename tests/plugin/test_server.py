"""The plugin transport on a real unix socket: what the daemon's plugin client sends, and what it gets back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fixeduser.plugin.http import Reply, _resumed
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
    if payload.get("Sleep"):  # only then does the call wait: started at once, it finishes at once
        await asyncio.sleep(float(payload["Sleep"]))
    if payload.get("Fail"):
        raise RuntimeError("handler broke")
    return {"Err": "", "Seen": payload.get("N")}


@pytest.fixture(params=["in a task", "at once"])
async def raw_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Path]:
    """Every test on it runs twice: with the handler in a task of its own, and started at once."""
    at_once = ["VolumeDriver.Echo"] if request.param == "at once" else []
    calls = PluginCalls(["VolumeDriver"], {"VolumeDriver.Echo": slow_then_echo}, at_once)
    server = SocketServer(calls, tmp_path / "raw.sock")
    await server.start()
    yield tmp_path / "raw.sock"
    await server.stop()


def http_request(body: bytes, *, path: str = "/VolumeDriver.Echo", method: str = "POST", extra: str = "") -> bytes:
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
    writer.write(http_request(b'{"N": 1, "Sleep": 0.2}') + http_request(b'{"N": 2}'))
    first, second = await read_reply(reader), await read_reply(reader)
    assert (first[0], json.loads(first[2])) == (200, {"Err": "", "Seen": 1})
    assert (second[0], json.loads(second[2])) == (200, {"Err": "", "Seen": 2})
    assert first[1]["content-type"] == CONTENT_TYPE and "connection" not in first[1]
    writer.write(http_request(b'{"N": 3}'))  # the connection stays open for the next call
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 3}
    writer.close()


async def test_a_chunked_body_is_read_whole(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(
        b"POST /VolumeDriver.Echo HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"N":\r\n3\r\n 7}\r\n0\r\n\r\n'
    )
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
        big = json.dumps({"Blob": "A" * 2000}).encode()
        writer.write(http_request(b'{"N": 1}') + http_request(big) + http_request(b"{}"))
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


async def test_a_client_that_expects_100_continue_is_told_to_send_its_body(raw_server: Path) -> None:
    """curl asks first before a large body; without the interim answer it would wait a second, then send."""
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    body = b'{"N": 8}'
    writer.write(http_request(body, extra="Expect: 100-continue\r\n")[: -len(body)])
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 8}
    writer.close()


async def test_oversized_headers_are_refused(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(http_request(b"{}", extra="X-Pad: " + "a" * (70 * 1024) + "\r\n"))
    status, _, body = await read_reply(reader)
    assert status == 431 and "request head over" in json.loads(body)["Err"]


async def test_a_failing_handler_gets_500_and_the_connection_keeps_working(
    raw_server: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(http_request(b'{"Fail": true}') + http_request(b'{"Fail": true, "Sleep": 0.01}'))
    for _ in range(2):  # failing before and after a wait
        status, _, body = await read_reply(reader)
        assert status == 500 and json.loads(body) == {"Err": "/VolumeDriver.Echo failed; see the plugin log"}
    assert "plugin call failed" in caplog.text and "handler broke" in caplog.text
    writer.write(http_request(b'{"N": 4}'))
    assert json.loads((await read_reply(reader))[2]) == {"Err": "", "Seen": 4}
    writer.close()


async def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(raw_server: Path) -> None:
    for raw in (
        http_request(b'{"N": 5}').replace(b"HTTP/1.1", b"HTTP/1.0"),
        http_request(b'{"N": 5}', extra="Connection: close\r\n"),
    ):
        reader, writer = await asyncio.open_unix_connection(str(raw_server))
        writer.write(raw)
        status, headers, body = await read_reply(reader)
        assert (status, headers["connection"], json.loads(body)) == (200, "close", {"Err": "", "Seen": 5})
        assert await reader.read() == b""


async def test_head_gets_the_status_without_a_body(raw_server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(raw_server))
    writer.write(http_request(b"", method="HEAD") + http_request(b'{"N": 6}'))
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
    writer.write(http_request(b'{"Name": "v"}', path="/VolumeDriver.Mount"))
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done() and not (tmp_path / "s.sock").exists()  # no new connections meanwhile
    release.set()
    status, _, body = await read_reply(reader)
    assert (status, json.loads(body)) == (200, {"Err": "", "Mountpoint": "/m"}) and finished == ["v"]
    await asyncio.wait_for(stopping, 5)
    assert await idle_reader.read() == b"" and await reader.read() == b""  # every connection closed


# ---------------------------------------------------------------------------- calls started at once


async def test_calls_named_at_once_start_without_a_task_and_go_on_in_one_only_when_they_wait(tmp_path: Path) -> None:
    """Pipelined on one connection: answers keep request order whichever way each call runs."""
    tasks: dict[int, tuple[asyncio.Task[Any] | None, asyncio.Task[Any] | None]] = {}

    async def where(payload: dict[str, Any]) -> dict[str, Any]:
        before = asyncio.current_task()
        if payload.get("Wait"):
            await asyncio.sleep(0.05)
        tasks[payload["N"]] = (before, asyncio.current_task())
        return {"Err": "", "Seen": payload["N"]}

    handlers = {"VolumeDriver.AtOnce": where, "VolumeDriver.InTask": where}
    calls = PluginCalls(["VolumeDriver"], handlers, at_once=["VolumeDriver.AtOnce"])
    server = SocketServer(calls, tmp_path / "o.sock")
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "o.sock"))
        writer.write(http_request(b'{"N": 1}', path="/VolumeDriver.AtOnce"))
        assert json.loads((await read_reply(reader))[2])["Seen"] == 1
        writer.write(
            http_request(b'{"N": 2, "Wait": true}', path="/VolumeDriver.AtOnce")
            + http_request(b'{"N": 3}', path="/VolumeDriver.InTask")
            + http_request(b'{"N": 4}', path="/VolumeDriver.AtOnce")
        )
        assert [json.loads((await read_reply(reader))[2])["Seen"] for _ in range(3)] == [2, 3, 4]
        writer.write(http_request(b'{"N": 5}', path="/VolumeDriver.AtOnce"))
        assert json.loads((await read_reply(reader))[2])["Seen"] == 5
        writer.close()
    finally:
        await server.stop()
    assert tasks[1] == (None, None) and tasks[5] == (None, None)  # finished where their bytes arrived
    assert tasks[2][0] is None and tasks[2][1] is not None  # waited: went on in a task
    assert tasks[3][0] is not None and tasks[4][0] is not None  # queued behind a task: answered by it


async def test_the_rest_of_a_call_started_at_once_gets_its_results_errors_and_cancellation() -> None:
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[str]] = []
    seen: list[str] = []

    async def call() -> Reply:
        for _ in range(2):
            waits.append(loop.create_future())
            try:
                seen.append(await waits[-1])
            except asyncio.CancelledError:
                seen.append("cancelled")
            except LookupError as exc:
                seen.append(f"error {exc}")
        if seen[-1] == "fail":
            raise OSError("gave up")
        return HTTPStatus.OK, ",".join(seen).encode()

    def started() -> asyncio.Task[Reply]:
        started_call = call()
        return asyncio.ensure_future(_resumed(started_call, started_call.send(None)))

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    task = started()
    waits[-1].set_result("one")
    await settle()
    waits[-1].set_exception(LookupError("two"))
    assert await task == (HTTPStatus.OK, b"one,error two")
    seen.clear()
    task = started()
    await settle()
    task.cancel()  # reaches the call, which goes on waiting
    await settle()
    waits[-1].set_result("fail")
    with pytest.raises(OSError, match="gave up"):
        await task
    assert seen == ["cancelled", "fail"]


def test_at_once_must_name_a_handler() -> None:
    with pytest.raises(ValueError, match="no handler for"):
        PluginCalls(["VolumeDriver"], {"VolumeDriver.Echo": echo}, ["VolumeDriver.Mount"])
