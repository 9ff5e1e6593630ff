"""Docker plugin transport: unix sockets, `Plugin.Activate`, JSON in and out. Knows no plugin type."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.1+json"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BadRequest(ValueError):
    """A plugin call whose body is not what the protocol says."""


def plugin_app(implements: list[str], handlers: Mapping[str, Handler]) -> web.Application:
    """An aiohttp app answering `/Plugin.Activate` and each `/<Method>` in `handlers`."""
    app = web.Application(client_max_size=16 * 1024 * 1024)

    async def activate(_: web.Request) -> web.Response:
        return _json({"Implements": implements})

    app.router.add_post("/Plugin.Activate", activate)
    for method, handler in handlers.items():
        app.router.add_post(f"/{method}", _endpoint(method, handler))
    return app


def _endpoint(method: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload = orjson.loads(raw) if raw.strip() else {}
            if not isinstance(payload, dict):
                raise BadRequest(f"{method} body must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            # Answer and stop: a body we cannot read is never processed further.
            return _json({"Err": f"bad {method} request: {exc}"}, status=400)
        return _json(await handler(payload))

    return serve


def _json(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=CONTENT_TYPE)


class SocketServer:
    """Runs one plugin app on a unix socket; optionally advertises it with a Docker spec file."""

    def __init__(
        self, app: web.Application, socket_path: Path, spec_path: Path | None = None, *, mode: int = 0o660
    ) -> None:
        self._app = app
        self.socket_path = socket_path
        self._spec_path = spec_path
        self._mode = mode
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise OSError(
                f"socket path {self.socket_path} is longer than the {MAX_SOCKET_PATH} bytes a unix socket "
                "allows: choose a shorter --plugin-dir"
            )
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.is_socket():
            self.socket_path.unlink()  # left over from a crash; a live plugin would hold a lock first
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket_path)).start()
        os.chmod(self.socket_path, self._mode)
        if self._spec_path is not None:
            self._spec_path.parent.mkdir(parents=True, exist_ok=True)
            self._spec_path.write_text(f"unix://{self.socket_path}\n")
        log.info("listening", extra={"socket": str(self.socket_path)})

    async def stop(self) -> None:
        if self._spec_path is not None:
            self._spec_path.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.socket_path.unlink(missing_ok=True)
