"""Docker plugin transport: unix sockets, `Plugin.Activate`, JSON in and out. Knows no plugin type."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from fixeduser.plugin.http import Call, PluginConnection, Reply

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.1+json"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BadRequest(ValueError):
    """A plugin call whose body is not what the protocol says."""


MAX_BODY = 16 * 1024 * 1024  # an AuthZ call carries up to 1 MiB of request or response body, base64-encoded
SHUTDOWN_GRACE = 60.0  # seconds a stopping plugin waits for calls in flight (a mount) before closing


class PluginCalls:
    """A plugin's calls: `POST /Plugin.Activate` and `POST /<Method>` for each of `handlers`.

    The handlers named in `at_once` start where the call arrives, with no task of their own until they
    first wait (`plugin.http`): they must not need one before that. The others each get a task."""

    def __init__(self, implements: list[str], handlers: Mapping[str, Handler], at_once: Collection[str] = ()) -> None:
        self._activation = orjson.dumps({"Implements": implements})
        self._handlers = {f"/{method}": (method, handler) for method, handler in handlers.items()}
        unknown = set(at_once) - set(handlers)
        if unknown:
            raise ValueError(f"no handler for {sorted(unknown)}")
        self._tasks_needed = {f"/{method}" for method in handlers if method not in at_once}

    def answers_at_once(self, call: Call) -> bool:
        return call.path not in self._tasks_needed or call.refusal is not None

    async def answer(self, call: Call) -> Reply:
        route = self._handlers.get(call.path)
        if route is None and call.path != "/Plugin.Activate":
            return self.refusal(HTTPStatus.NOT_FOUND, f"fixeduser does not implement {call.path}")
        if call.method != "POST":
            return self.refusal(HTTPStatus.METHOD_NOT_ALLOWED, f"{call.path} takes POST, not {call.method}")
        if route is None:
            return HTTPStatus.OK, self._activation
        method, handler = route
        try:
            # An empty body is `{}`; `isspace` tests the rest without copying a body of up to 16 MiB.
            payload = {} if not call.body or call.body.isspace() else orjson.loads(call.body)
            if not isinstance(payload, dict):
                raise BadRequest(f"{method} body must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            # Answer and stop: a body we cannot read is never processed further.
            return self.refusal(HTTPStatus.BAD_REQUEST, f"bad {method} request: {exc}")
        return HTTPStatus.OK, orjson.dumps(await handler(payload))

    def refusal(self, status: HTTPStatus, reason: str) -> Reply:
        return status, orjson.dumps({"Err": reason})


class SocketServer:
    """Serves plugin calls (or, for the control socket, an aiohttp app) on a unix socket; optionally
    advertises it with a Docker spec file."""

    def __init__(
        self,
        app: PluginCalls | web.Application,
        socket_path: Path,
        spec_path: Path | None = None,
        *,
        mode: int = 0o660,
    ) -> None:
        self._app = app
        self.socket_path = socket_path
        self._spec_path = spec_path
        self._mode = mode
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[PluginConnection] = set()

    async def start(self) -> None:
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise OSError(
                f"socket path {self.socket_path} is longer than the {MAX_SOCKET_PATH} bytes a unix socket "
                "allows: choose a shorter --plugin-dir"
            )
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.is_socket():
            self.socket_path.unlink()  # left over from a crash; a live plugin would hold a lock first
        if isinstance(self._app, web.Application):
            self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.UnixSite(self._runner, str(self.socket_path)).start()
        else:
            calls, live = self._app, self._connections
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: PluginConnection(calls, CONTENT_TYPE, MAX_BODY, live), str(self.socket_path)
            )
        os.chmod(self.socket_path, self._mode)
        if self._spec_path is not None:
            self._spec_path.parent.mkdir(parents=True, exist_ok=True)
            self._spec_path.write_text(f"unix://{self.socket_path}\n")
        log.info("listening", extra={"socket": str(self.socket_path)})

    async def stop(self) -> None:
        if self._spec_path is not None:
            self._spec_path.unlink(missing_ok=True)
        if self._server is not None:
            self._server.close()  # no new connections
        self.socket_path.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._finish_calls(self._server)

    async def _finish_calls(self, server: asyncio.Server) -> None:
        """Let calls in flight finish (within SHUTDOWN_GRACE), then close every connection."""
        in_flight = [c.worker for c in self._connections if c.worker is not None]
        if in_flight:
            await asyncio.wait(in_flight, timeout=SHUTDOWN_GRACE)
        for connection in list(self._connections):
            connection.close()
        await server.wait_closed()
