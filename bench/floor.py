"""The floor: a minimal allow-all Docker authz plugin on aiohttp, as anyone would write one.

It reads each request, parses the JSON body (every real plugin has to) and answers
`{"Allow": true}`. Whatever fixeduser costs above this is the price of its decisions.

`--transport asyncio` (the default) is the plain minimal plugin: an aiohttp app, the standard json
module. `--transport fixeduser` answers allow-all through fixeduser's own plugin transport
(`fixeduser.plugin.server`: httptools, orjson), so the difference to fixeduser is its decision work
alone. `--transport bare` is no framework at all: blocking sockets, a thread per connection, the
request read by its Content-Length and `{"Allow": true}` written back. It is the least any authz
plugin can cost the daemon: what is left is the daemon's own round trip to a plugin.

With `--volume-root DIR` it also answers the `VolumeDriver.*` calls with a trivial driver that
serves plain directories under DIR: the floor of a volume plugin, for the docker part (on aiohttp,
or with `--transport fixeduser` on fixeduser's transport; not on bare sockets). With
`--record FILE` it appends every plugin call it receives (path and JSON body) to FILE as JSON
lines: `python -m bench capture` uses that to record the AuthZReq/AuthZRes bodies a real daemon
sends for docker run, ps, inspect and exec.

Run: python -m bench.floor SOCKET [--transport asyncio|fixeduser|bare] [--volume-root DIR] [--record FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

CONTENT_TYPE = "application/vnd.docker.plugins.v1.1+json"
ALLOW = json.dumps({"Allow": True, "Msg": "", "Err": ""}).encode()


def floor_app(loads: Callable[[bytes], Any] = json.loads) -> web.Application:
    """Allow-all authz: Plugin.Activate, AuthZReq, AuthZRes."""
    app = web.Application(client_max_size=16 * 1024 * 1024)

    async def activate(_: web.Request) -> web.Response:
        return web.Response(body=b'{"Implements": ["authz"]}', content_type=CONTENT_TYPE)

    async def allow(request: web.Request) -> web.Response:
        loads(await request.read())
        return web.Response(body=ALLOW, content_type=CONTENT_TYPE)

    app.router.add_post("/Plugin.Activate", activate)
    app.router.add_post("/AuthZPlugin.AuthZReq", allow)
    app.router.add_post("/AuthZPlugin.AuthZRes", allow)
    return app


VOLUME_CALLS = ("Create", "Remove", "Mount", "Unmount", "Path", "Get", "List", "Capabilities")


class TrivialDriver:
    """A volume driver serving plain folders under `volume_root`: the floor of a volume plugin."""

    def __init__(self, volume_root: Path) -> None:
        self.volume_root = volume_root
        self.volumes: dict[str, Path] = {}

    def answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """The reply to `VolumeDriver.<method>`."""
        name = body.get("Name", "")
        match method:
            case "Create":
                path = self.volume_root / name
                path.mkdir(parents=True, exist_ok=True)
                self.volumes[name] = path
                reply: dict[str, Any] = {"Err": ""}
            case "Remove":
                self.volumes.pop(name, None)
                reply = {"Err": ""}
            case "Mount" | "Path":
                reply = {"Err": "", "Mountpoint": str(self.volumes.get(name, ""))}
            case "Unmount":
                reply = {"Err": ""}
            case "Get" if name not in self.volumes:
                reply = {"Err": f"no such volume {name}"}
            case "Get":
                reply = {"Err": "", "Volume": {"Name": name, "Mountpoint": str(self.volumes[name])}}
            case "List":
                reply = {"Err": "", "Volumes": [{"Name": n, "Mountpoint": str(p)} for n, p in self.volumes.items()]}
            case "Capabilities":
                reply = {"Capabilities": {"Scope": "local"}}
            case _:
                reply = {"Err": f"unknown call VolumeDriver.{method}"}
        return reply


def driver_app(volume_root: Path, record: Path | None = None) -> web.Application:
    """Allow-all authz plus the trivial volume driver, on aiohttp; with `record`, logs every call there."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    out = record.open("a", encoding="utf-8") if record is not None else None
    driver = TrivialDriver(volume_root)

    def reply(payload: dict[str, Any]) -> web.Response:
        return web.Response(body=json.dumps(payload).encode(), content_type=CONTENT_TYPE)

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw.strip() else {}
        method = request.path.lstrip("/")
        if out is not None:
            out.write(json.dumps({"call": method, "body": body}) + "\n")
            out.flush()
        if method == "Plugin.Activate":
            return reply({"Implements": ["authz", "VolumeDriver"]})
        if method.startswith("AuthZPlugin."):
            return reply({"Allow": True})
        if method.startswith("VolumeDriver."):
            return reply(driver.answer(method.removeprefix("VolumeDriver."), body))
        return reply({"Err": f"unknown call {method}"})

    app.router.add_post("/{call}", handle)
    return app


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def _serve(socket_path: Path, app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await asyncio.to_thread(socket_path.unlink, missing_ok=True)
    await web.UnixSite(runner, str(socket_path)).start()
    os.chmod(socket_path, 0o660)
    try:
        await _until_stopped()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(socket_path.unlink, missing_ok=True)


def _serve_bare(socket_path: Path) -> None:
    socket_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    os.chmod(socket_path, 0o660)
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: (socket_path.unlink(missing_ok=True), os._exit(0)))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_answer_bare, args=(conn,), daemon=True).start()


def _answer_bare(conn: socket.socket) -> None:
    buffered = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buffered:
                data = conn.recv(65536)
                if not data:
                    return
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(
                (
                    int(v)
                    for k, _, v in (line.partition(b":") for line in lines[1:])
                    if k.strip().lower() == b"content-length"
                ),
                0,
            )
            while len(buffered) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buffered += data
            buffered = buffered[length:]
            body = b'{"Implements": ["authz"]}' if b"/Plugin.Activate" in lines[0] else ALLOW
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (CONTENT_TYPE.encode(), len(body), body)
            )


async def _serve_on_fixeduser_transport(socket_path: Path, volume_root: Path | None = None) -> None:
    from fixeduser.plugin.server import Handler, PluginCalls, SocketServer  # noqa: PLC0415
    from fixeduser.volumes.api import ANSWERED_AT_ONCE  # noqa: PLC0415

    async def allow(_: dict[str, Any]) -> dict[str, Any]:
        return {"Allow": True, "Msg": "", "Err": ""}

    decisions = ("AuthZPlugin.AuthZReq", "AuthZPlugin.AuthZRes")  # started at once, as fixeduser's are
    handlers: dict[str, Handler] = dict.fromkeys(decisions, allow)
    at_once = list(decisions)
    implements = ["authz"]
    if volume_root is not None:
        driver = TrivialDriver(volume_root)

        def volume_call(method: str) -> Handler:
            async def handle(body: dict[str, Any]) -> dict[str, Any]:
                return driver.answer(method, body)

            return handle

        handlers |= {f"VolumeDriver.{method}": volume_call(method) for method in VOLUME_CALLS}
        implements.append("VolumeDriver")
        at_once += ANSWERED_AT_ONCE  # as fixeduser's volume calls that never wait
    server = SocketServer(PluginCalls(implements, handlers, at_once=at_once), socket_path)
    await server.start()
    try:
        await _until_stopped()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--volume-root", type=Path)
    parser.add_argument("--transport", choices=("asyncio", "fixeduser", "bare"), default="asyncio")
    args = parser.parse_args()
    if args.transport == "bare" and args.volume_root:
        parser.error("--volume-root is served on aiohttp or fixeduser's transport, not on bare sockets")
    if args.transport == "fixeduser" and not args.record:
        asyncio.run(_serve_on_fixeduser_transport(args.socket, args.volume_root))
        return
    if args.record or args.volume_root:
        app = driver_app(args.volume_root or args.socket.parent / "volumes", args.record)
    elif args.transport == "bare":
        _serve_bare(args.socket)
        return
    else:
        app = floor_app()
    asyncio.run(_serve(args.socket, app))


if __name__ == "__main__":
    main()
