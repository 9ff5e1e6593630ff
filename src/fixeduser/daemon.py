"""A tiny client for the Docker daemon the plugin serves, used only for read-only look-ups.

Its requests cross our own authz plugin too; they carry a per-process secret header so the
plugin can let exactly these read-only calls through whatever the policy says of @local.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp

SELF_HEADER = "X-Fixeduser-Self"
SELF_ACTIONS = frozenset({"container.list", "container.inspect", "volume.inspect"})


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
        filters = quote(json.dumps({"volume": [volume]}))
        listing = await self._get(f"/containers/json?all=1&filters={filters}")
        return {item["Id"]: item.get("State", "") for item in listing or []}

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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
