"""The daemon client's HTTP: kept-alive connections, answers of every framing, a connection the daemon
closed between two look-ups."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httptools
import pytest
from aiohttp import web

from fixeduser.docker_api.unix_client import MAX_IDLE, TooManyRedirects, UnixHttpClient


@contextlib.asynccontextmanager
async def serving(path: Path, app: web.Application) -> AsyncIterator[None]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    try:
        yield
    finally:
        await runner.cleanup()


def daemon_app(peers: list[object], headers: list[str]) -> web.Application:
    async def inspect(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport)
        headers.append(request.headers.get("X-Test", ""))
        return web.json_response({"Id": request.match_info["ref"]})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"a":', b"1}"):
            await response.write(part)
        await response.write_eof()
        return response

    async def closing(request: web.Request) -> web.Response:
        return web.Response(body=b"bye", headers={"Connection": "close"})

    async def started(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def uncleaned(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(location="/containers/x/json")  # what the daemon's router does

    async def looping(request: web.Request) -> web.Response:
        raise web.HTTPFound(location="http://docker/looping")

    app = web.Application()
    app.router.add_get("/containers/{ref}/json", inspect)
    app.router.add_get("/uncleaned", uncleaned)
    app.router.add_get("/looping", looping)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/closing", closing)
    app.router.add_post("/start", started)
    return app


async def test_look_ups_share_one_kept_alive_connection(tmp_path: Path) -> None:
    path, peers, headers = tmp_path / "d.sock", [], []
    client = UnixHttpClient(str(path), {"X-Test": "token"})
    async with serving(path, daemon_app(peers, headers)):
        for ref in ("a", "b", "c"):
            assert await client.request("GET", f"/containers/{ref}/json") == (200, b'{"Id": "' + ref.encode() + b'"}')
        assert len(set(map(id, peers))) == 1 and headers == ["token"] * 3
        assert await client.request("GET", "/chunked") == (200, b'{"a":1}')
        assert await client.request("GET", "/closing") == (200, b"bye")
        assert await client.request("POST", "/start") == (204, b"")
        assert (await client.request("GET", "/nothing"))[0] == 404
        assert await client.request("GET", "/uncleaned") == (200, b'{"Id": "x"}')
        with pytest.raises(TooManyRedirects):
            await client.request("GET", "/looping")
    client.close()


async def test_concurrent_look_ups_each_have_a_connection_and_few_are_kept(tmp_path: Path) -> None:
    path, peers = tmp_path / "d.sock", []
    client = UnixHttpClient(str(path), {})
    async with serving(path, daemon_app(peers, [])):
        many = MAX_IDLE + 12
        answers = await asyncio.gather(*(client.request("GET", f"/containers/{i}/json") for i in range(many)))
        assert [status for status, _ in answers] == [200] * many
        assert len(client._idle) == MAX_IDLE
    client.close()


async def test_a_connection_the_daemon_closed_is_not_a_failed_look_up(tmp_path: Path) -> None:
    """A restarted daemon closes every kept-alive connection: the next GET goes out on a new one."""
    path, peers = tmp_path / "d.sock", []
    client = UnixHttpClient(str(path), {})
    async with serving(path, daemon_app(peers, [])):
        assert (await client.request("GET", "/containers/a/json"))[0] == 200
    async with serving(path, daemon_app(peers, [])):
        assert (await client.request("GET", "/containers/b/json"))[0] == 200
    with pytest.raises(OSError):
        await client.request("GET", "/containers/c/json")  # no daemon at all
    client.close()


async def test_not_http_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-nope\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_unix_server(garbage, str(path))
    client = UnixHttpClient(str(path), {})
    try:
        with pytest.raises(httptools.HttpParserError):
            await client.request("GET", "/x")
    finally:
        client.close()
        server.close()
