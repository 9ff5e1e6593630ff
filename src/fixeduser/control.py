"""The plugin's own control socket (root only): status for `fixeduser status`, and health.

Docker never talks to it; it lives in the state folder, beside the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Probe = Callable[[], Awaitable[dict[str, Any]]]
HealthCheck = Callable[[], Awaitable[list[str]]]


def control_app(*, status: Probe, health: HealthCheck) -> web.Application:
    """GET /status: a JSON snapshot; GET /healthz: 200 when usable, 503 with the problems otherwise."""
    app = web.Application()

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(await status())

    async def get_health(_: web.Request) -> web.Response:
        problems = await health()
        return web.json_response({"ok": not problems, "problems": problems}, status=503 if problems else 200)

    app.router.add_get("/status", get_status)
    app.router.add_get("/healthz", get_health)
    return app
