"""`VolumeDriver.*` handlers: pydantic models of the wire format around the driver core."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fixeduser.plugin.server import Handler
from fixeduser.volumes.driver import DriverError, VolumeDriver

log = logging.getLogger(__name__)


class NameRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(alias="Name", min_length=1)


class CreateRequest(NameRequest):
    opts: dict[str, str] | None = Field(None, alias="Opts")


class MountRequest(NameRequest):
    id: str = Field(alias="ID", min_length=1)


def volume_handlers(driver: VolumeDriver) -> dict[str, Handler]:
    async def create(p: dict[str, Any]) -> dict[str, Any]:
        request = CreateRequest.model_validate(p)
        await driver.create(request.name, request.opts or {})
        return {}

    async def remove(p: dict[str, Any]) -> dict[str, Any]:
        await driver.remove(NameRequest.model_validate(p).name)
        return {}

    async def mount(p: dict[str, Any]) -> dict[str, Any]:
        request = MountRequest.model_validate(p)
        return {"Mountpoint": await driver.mount(request.name, request.id)}

    async def unmount(p: dict[str, Any]) -> dict[str, Any]:
        request = MountRequest.model_validate(p)
        await driver.unmount(request.name, request.id)
        return {}

    async def path(p: dict[str, Any]) -> dict[str, Any]:
        return {"Mountpoint": driver.path(NameRequest.model_validate(p).name)}

    async def get(p: dict[str, Any]) -> dict[str, Any]:
        name = NameRequest.model_validate(p).name
        await driver.known(name)
        return {"Volume": driver.get(name)}

    async def listing(_: dict[str, Any]) -> dict[str, Any]:
        return {"Volumes": driver.list()}

    async def capabilities(_: dict[str, Any]) -> dict[str, Any]:
        return {"Capabilities": {"Scope": driver.backend.scope}}

    calls = {
        "Create": create, "Remove": remove, "Mount": mount, "Unmount": unmount,
        "Path": path, "Get": get, "List": listing, "Capabilities": capabilities,
    }  # fmt: skip
    return {f"VolumeDriver.{name}": _with_errors(call) for name, call in calls.items()}


def _with_errors(call: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Handler:
    """One error envelope for all eight calls: `{"Err": message}`."""

    async def handle(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await call(payload)
        except ValidationError as exc:
            return {"Err": f"bad request: {exc.errors(include_url=False)}"}
        except DriverError as exc:
            return {"Err": str(exc)}
        except Exception as exc:
            log.exception("volume driver call failed")
            return {"Err": f"fixeduser internal error: {exc}"}
        return {"Err": "", **result}

    return handle
