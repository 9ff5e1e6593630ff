"""A storage backend in memory, following the `Backend` protocol: the driver core's tests run without root,
FUSE or bindfs. Views are names in a set; a volume is its top folder's owner and mode; failures are injected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fixeduser.docker_api.daemon import ListedContainer
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import BackendError, validate_volume_name


@dataclass
class StoredVolume:
    owner: Identity
    mode: int
    empty: bool = True


@dataclass
class MemoryBackend:
    name: str = "memory"
    scope: Literal["local", "global"] = "local"
    root: Path = Path("/memory")
    volumes: dict[str, StoredVolume] = field(default_factory=dict)
    views: set[str] = field(default_factory=set)  # Identity.key of each mounted view
    fail: set[str] = field(default_factory=set)  # names of the calls that raise BackendError

    def _step(self, call: str) -> None:
        if call in self.fail:
            raise BackendError(f"injected failure in {call}")

    async def check(self) -> None:
        self._step("check")

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        self._step("create_volume")
        if validate_volume_name(volume) in self.volumes and isinstance(options, dict):
            options["adopted"] = "true"  # found, not made: like the Quobyte backend, say so in the stored options
        self.volumes.setdefault(volume, StoredVolume(owner=owner, mode=mode))

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        self._step("remove_volume")
        if purge:
            self.volumes.pop(volume, None)

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        self._step("set_top_folder")
        stored = self.volumes[volume]
        if only_if_empty and not stored.empty:
            return False
        stored.owner, stored.mode = owner, mode
        return True

    async def volume_exists(self, volume: str) -> bool:
        return volume in self.volumes

    async def mount_identity(self, identity: Identity) -> Path:
        self._step("mount_identity")
        self.views.add(identity.key)
        return self.root / identity.key

    def volume_path(self, identity: Identity, volume: str) -> Path:
        return self.root / identity.key / volume

    async def unmount_identity(self, identity: Identity) -> None:
        self._step("unmount_identity")
        self.views.discard(identity.key)

    async def mounted_identities(self) -> list[str]:
        return sorted(self.views)

    async def close(self) -> None:
        pass


@dataclass
class Restarting:
    """The daemon's list of containers restarting with a volume, as the resolver asks for it."""

    containers: dict[str, list[str]] = field(default_factory=dict)  # volume -> IDs

    async def containers_using(self, volume: str, *, states: tuple[str, ...] = ()) -> list[ListedContainer]:
        assert states == ("restarting",)
        return [ListedContainer.model_validate({"Id": cid, "State": "restarting"})
                for cid in self.containers.get(volume, [])]  # fmt: skip
