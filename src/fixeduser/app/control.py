"""The plugin's own control socket (root only): status for `fixeduser status`, health, metrics.

Docker never talks to it; it lives in the state folder, beside the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, computed_field

__all__ = ["PROMETHEUS_CONTENT_TYPE", "HealthReport", "control_app"]


class HealthReport(BaseModel):
    """What GET /healthz answers: `problems` make the plugin unusable (503); `notes` do not (200)."""

    model_config = ConfigDict(frozen=True)

    problems: list[str] = Field(default_factory=list, description="why the plugin cannot do its job")
    notes: list[str] = Field(
        default_factory=list, description="usable, but worth an alert (e.g. a rejected policy reload)"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.problems


Probe = Callable[[], Awaitable[dict[str, Any]]]
HealthCheck = Callable[[], Awaitable[HealthReport]]
Exposition = Callable[[], bytes]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def control_app(*, status: Probe, health: HealthCheck, metrics: Exposition | None = None) -> web.Application:
    """GET /status: a JSON snapshot; GET /healthz: 200 when usable, 503 with the problems otherwise
    (both with notes); GET /metrics (when `metrics` is given): the Prometheus text exposition."""
    app = web.Application()

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(await status())

    async def get_health(_: web.Request) -> web.Response:
        report = await health()
        return web.json_response(report.model_dump(mode="json"), status=200 if report.ok else 503)

    app.router.add_get("/status", get_status)
    app.router.add_get("/healthz", get_health)
    if metrics is not None:
        exposition = metrics

        async def get_metrics(_: web.Request) -> web.Response:
            response = web.Response(body=exposition())
            response.headers["Content-Type"] = PROMETHEUS_CONTENT_TYPE
            return response

        app.router.add_get("/metrics", get_metrics)
    return app
