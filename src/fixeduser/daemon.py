"""A tiny client for the Docker daemon the plugin serves, used only for read-only look-ups.

Its requests cross our own authz plugin too; they carry a per-process secret header so the
plugin can let exactly these read-only calls through whatever the policy says of @local.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

SELF_HEADER = "X-Fixeduser-Self"
SELF_ACTIONS = frozenset({"container.list", "container.inspect", "volume.inspect", "network.inspect", "task.inspect"})
HOST_NETWORK = "host"


class ListedMount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field("", alias="Type")
    name: str = Field("", alias="Name")


class ListedContainer(BaseModel):
    """The fields of a `GET /containers/json` entry fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="Id")
    names: tuple[str, ...] = Field((), alias="Names")  # each with a leading "/"
    state: str = Field("", alias="State")
    mounts: tuple[ListedMount, ...] = Field((), alias="Mounts")

    @field_validator("names", "mounts", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    def mount_points_of(self, volume: str) -> int:
        return sum(1 for mount in self.mounts if mount.type == "volume" and mount.name == volume)


_CONTAINER_LIST = TypeAdapter(list[ListedContainer])


class InspectedNetwork(BaseModel):
    """The fields of a `GET /networks/{id}` answer fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    driver: str = Field("", alias="Driver")

    @property
    def is_host(self) -> bool:
        """The host's own network namespace: the predefined `host` network (local or swarm-scoped)."""
        return HOST_NETWORK in (self.name, self.driver)


class InspectedTask(BaseModel):
    """The fields of a `GET /tasks/{id}` answer fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="ID")
    service_id: str = Field(alias="ServiceID")


class DaemonError(RuntimeError):
    """The daemon could not answer a look-up the plugin needed."""


class DaemonClient:
    def __init__(self, host: str, *, timeout: float = 10.0) -> None:
        if not host.startswith("unix://"):
            raise ValueError(f"--docker-host must be a unix:// socket, got {host!r}")
        self._socket = host.removeprefix("unix://")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.token = secrets.token_hex(16)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self._socket),
                timeout=self._timeout,
                headers={SELF_HEADER: self.token},
            )
        return self._session

    async def _get(self, path: str) -> Any:
        try:
            async with self._client().get(f"http://docker{path}") as response:
                body = await response.read()
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise DaemonError(f"daemon answered {response.status} to GET {path}: {body[:200]!r}")
                return json.loads(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DaemonError(f"cannot reach the Docker daemon at {self._socket}: {exc}") from exc

    async def container_states(self, volume: str) -> dict[str, str]:
        """ID -> state of every container that uses `volume`."""
        return {user.id: user.state for user in await self.containers_using(volume)}

    async def containers_using(self, volume: str) -> list[ListedContainer]:
        """Every container (any state) with a mount point of `volume`."""
        filters = quote(json.dumps({"volume": [volume]}))
        listing = await self._get(f"/containers/json?all=1&filters={filters}")
        try:
            return _CONTAINER_LIST.validate_python(listing or [])
        except ValidationError as exc:
            raise DaemonError(f"unexpected container list from the daemon: {exc}") from exc

    async def container_ids(self) -> set[str]:
        """IDs of every container the daemon has, running or not."""
        listing = await self._get("/containers/json?all=1")
        return {item["Id"] for item in listing or []}

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        result = await self._get(f"/containers/{quote(reference, safe='')}/json")
        return result if isinstance(result, dict) else None

    async def inspect_volume(self, name: str) -> dict[str, Any] | None:
        """The daemon's view of a volume (driver, options), or None if it does not exist."""
        result = await self._get(f"/volumes/{quote(name, safe='')}")
        return result if isinstance(result, dict) else None

    async def inspect_network(self, reference: str) -> InspectedNetwork | None:
        """The network the daemon resolves `reference` to (ID, name or ID prefix), or None if none."""
        return _validated(InspectedNetwork, await self._get(f"/networks/{quote(reference, safe='')}"), "network")

    async def inspect_task(self, reference: str) -> InspectedTask | None:
        """The swarm task the daemon resolves `reference` to, or None if none (a non-manager answers 503)."""
        return _validated(InspectedTask, await self._get(f"/tasks/{quote(reference, safe='')}"), "task")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], answer: Any, what: str) -> _Model | None:
    if answer is None:
        return None
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        raise DaemonError(f"unexpected {what} description from the daemon: {exc}") from exc
