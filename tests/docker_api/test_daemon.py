"""The daemon client: look-ups that say what went wrong and share identical requests; DaemonWatch tells,
from an event stream on the daemon's socket, whether the daemon's API answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from fixeduser.docker_api.daemon import DaemonClient, DaemonUnavailable, DaemonWatch, is_full_id
from tests.waiting import until


async def _events(request: web.Request) -> web.StreamResponse:
    """Like dockerd: headers at once, then nothing until something happens (here: never)."""
    response = web.StreamResponse()
    await response.prepare(request)
    await asyncio.Event().wait()
    return response


@contextlib.asynccontextmanager
async def answering_daemon(path: Path, events: Handler = _events) -> AsyncIterator[None]:
    app = web.Application()
    app.router.add_get("/events", events)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def restoring_daemon(path: Path) -> socket.socket:  # type: ignore[misc]
    """A daemon restoring its containers: its socket accepts connections, its API does not answer yet."""
    path.unlink(missing_ok=True)  # left by the daemon before
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(16)
    try:
        yield listener
    finally:
        listener.close()
        path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def watching(path: Path) -> AsyncIterator[tuple[DaemonWatch, list[str]]]:
    """A running DaemonWatch of the daemon socket `path`, and what its serving and reload listeners saw."""
    client = DaemonClient(f"unix://{path}", timeout=1.0)
    watch = DaemonWatch(client, grace=0.3, retry=0.05)
    seen: list[str] = []

    async def serving() -> None:
        seen.append("serving")

    async def reload() -> None:
        seen.append("reload")

    watch.on_serving(serving)
    watch.on_reload(reload)
    task = asyncio.create_task(watch.run())
    try:
        yield watch, seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[DaemonWatch, Path, list[str]]]:
    path = tmp_path / "docker.sock"
    async with watching(path) as (watch, seen):
        yield watch, path, seen


async def test_serving_follows_the_daemon(watched: tuple[DaemonWatch, Path, list[str]]) -> None:
    """Serving while the stream is open; down the moment the daemon goes; serving again when it is back."""
    watch, path, seen = watched
    async with answering_daemon(path):
        await until(lambda: watch.serving, within=5)
        assert await watch.wait_serving() and watch.down_for() == 0.0
        await until(lambda: seen == ["serving"], within=5)  # listeners run as tasks of their own
    await until(lambda: not watch.serving, within=5)
    async with answering_daemon(path):
        await until(lambda: watch.serving, within=5)
        await until(lambda: seen == ["serving", "serving"], within=5)


async def test_a_restoring_daemon_is_not_waited_for(watched: tuple[DaemonWatch, Path, list[str]]) -> None:
    """While the socket accepts but the API does not answer, a look-up is refused once the grace is over,
    without waiting for any timeout."""
    watch, path, seen = watched
    async with answering_daemon(path):
        await until(lambda: watch.serving, within=5)
    await until(lambda: not watch.serving, within=5)
    with restoring_daemon(path):
        await asyncio.sleep(0.5)  # past the grace: the daemon has been gone for a while
        waiting = watch.wait_serving()
        with pytest.raises(StopIteration) as answered:  # in its first step: it waits for nothing
            waiting.send(None)
        assert answered.value.value is False
        assert watch.down_for() >= 0.5 and seen == ["serving"]


class CountingClient(DaemonClient):
    """Counts the event streams the watch tries to open."""

    streams = 0

    def event_stream(self, on_event: Callable[[bytes], None]) -> Any:
        self.streams += 1
        return super().event_stream(on_event)


async def test_a_stopped_daemon_costs_the_watch_no_stream_attempts(tmp_path: Path) -> None:
    """While nothing listens on the socket (no file, or the file of a daemon that stopped), the watch only
    tries to connect; once a daemon listens it opens the stream and sees the daemon serve."""
    path = tmp_path / "docker.sock"
    client = CountingClient(f"unix://{path}", timeout=1.0)
    watch = DaemonWatch(client, grace=0.3, retry=0.01)
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.3)  # thirty retries with no socket file
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))  # the file is there, nothing accepts on it
        await asyncio.sleep(0.3)
        stale.close()
        assert client.streams == 0 and not watch.serving
        path.unlink()
        async with answering_daemon(path):
            await until(lambda: watch.serving, within=5)
        assert client.streams >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def test_a_look_up_that_times_out_says_so_and_after_how_long(tmp_path: Path) -> None:
    """A daemon that accepts but never answers: the error names the call and the time waited."""
    path = tmp_path / "docker.sock"
    client = DaemonClient(f"unix://{path}", timeout=0.3)
    try:
        with restoring_daemon(path), pytest.raises(DaemonUnavailable, match=r"did not answer GET /containers/x/json "
                                                                              r"within 0\.3 s"):  # fmt: skip
            await client.inspect_container("x")
        with pytest.raises(DaemonUnavailable, match=r"cannot reach the .*FileNotFoundError: .*No such file"):
            await client.inspect_container("x")
    finally:
        await client.close()


async def test_concurrent_identical_look_ups_share_one_request(tmp_path: Path) -> None:
    """Eight creates naming the same unknown volume at once cost the daemon one answer; different ones each
    their own, and a later look-up asks again (nothing is cached)."""
    asked: list[str] = []

    async def volume(request: web.Request) -> web.Response:
        asked.append(request.match_info["name"])
        await asyncio.sleep(0.2)
        return web.json_response({"Name": request.match_info["name"], "Driver": "local", "Options": None})

    app = web.Application()
    app.router.add_get("/volumes/{name}", volume)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(tmp_path / "docker.sock")).start()
    client = DaemonClient(f"unix://{tmp_path / 'docker.sock'}")
    try:
        answers = await asyncio.gather(*(client.inspect_volume("x") for _ in range(8)), client.inspect_volume("y"))
        assert [a["Name"] if a else None for a in answers] == ["x"] * 8 + ["y"]
        assert sorted(asked) == ["x", "y"]
        await client.inspect_volume("x")
        assert sorted(asked) == ["x", "x", "y"]
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("reference", "full"),
    [
        ("0123456789abcdef" * 4, True),
        ("0123456789ABCDEF" * 4, False),  # the daemon writes IDs in lowercase; a name may not pose as one
        ("0123456789abcdef" * 4 + "\n", False),
        ("0123456789abcdef" * 4 + "0", False),
        ("0123456789abcdef" * 3 + "0123456789abcdeg", False),
        ("0123456789abcdef" * 2, False),
        ("web", False),
        ("", False),
    ],
)
def test_a_full_id_is_64_lowercase_hex_digits(reference: str, full: bool) -> None:
    assert is_full_id(reference) is full


async def test_a_reload_event_reaches_the_reload_listeners_however_the_stream_is_cut(tmp_path: Path) -> None:
    """Only the daemon's own `reload` event counts; a line may arrive in pieces; garbage is skipped."""
    chunks = [
        b'{"Type":"container","Action":"reload"}\n',  # not the daemon's
        b"not json\n\n",
        b'{"Type":"daemon","Act',  # the daemon's reload, cut in two
        b'ion":"reload","Actor":{"ID":"x","Attributes":{"debug":"true"}}}\n{"Type":"daemon","Action":"other"}\n',
    ]

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0.05)
        await asyncio.Event().wait()
        return response

    path = tmp_path / "docker.sock"
    async with answering_daemon(path, events), watching(path) as (_, seen):
        await until(lambda: seen == ["serving", "reload"], within=5)
        await asyncio.sleep(0.3)  # the rest of the stream brings no second one
        assert seen == ["serving", "reload"]
