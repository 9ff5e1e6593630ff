"""`VolumeDriver.*` handlers: the wire format, validated by pydantic, around the driver core."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from fixeduser.plugin.server import Handler
from fixeduser.volumes.driver import DriverError, VolumeDriver

log = logging.getLogger(__name__)

# TypedDicts, not models: the daemon makes nine volume calls per `docker run -v`, and making a model instance
# was most of what reading one cost when the plugin had been idle (bench/NOTES.md#authz-wire).
NonEmpty = Annotated[str, Field(min_length=1)]


class NameWire(TypedDict):
    Name: NonEmpty


class CreateWire(NameWire, total=False):
    Opts: dict[str, str] | None


class MountWire(NameWire):
    ID: NonEmpty


# Calls that never wait for anything on a single host, answered where they arrive, with no task of their own
# (`plugin.http`): the daemon makes five `Get`s per `docker run -v` and waits for each (bench/NOTES.md#view-paths).
ANSWERED_AT_ONCE = ("VolumeDriver.Get", "VolumeDriver.Path", "VolumeDriver.List", "VolumeDriver.Capabilities")

NAME: TypeAdapter[NameWire] = TypeAdapter(NameWire)
CREATE: TypeAdapter[CreateWire] = TypeAdapter(CreateWire)
MOUNT: TypeAdapter[MountWire] = TypeAdapter(MountWire)


def volume_handlers(driver: VolumeDriver) -> dict[str, Handler]:
    async def create(p: dict[str, Any]) -> dict[str, Any]:
        request = CREATE.validate_python(p)
        await driver.create(request["Name"], request.get("Opts") or {})
        return {}

    async def remove(p: dict[str, Any]) -> dict[str, Any]:
        await driver.remove(NAME.validate_python(p)["Name"])
        return {}

    async def mount(p: dict[str, Any]) -> dict[str, Any]:
        request = MOUNT.validate_python(p)
        return {"Mountpoint": await driver.mount(request["Name"], request["ID"])}

    async def unmount(p: dict[str, Any]) -> dict[str, Any]:
        request = MOUNT.validate_python(p)
        await driver.unmount(request["Name"], request["ID"])
        return {}

    async def path(p: dict[str, Any]) -> dict[str, Any]:
        return {"Mountpoint": driver.path(NAME.validate_python(p)["Name"])}

    async def get(p: dict[str, Any]) -> dict[str, Any]:
        name = NAME.validate_python(p)["Name"]
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
