"""Volume metadata and active mounts, kept in memory and persisted in the state store.

The store is written *before* memory changes, so a failed write leaves memory as it was and
what is in memory is always what a restarted plugin will load.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fixeduser.policy.identity import Identity
from fixeduser.state.store import StateStore


class VolumeRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    creator: str
    owner: Identity  # of the top folder: the pin, the creator's identity, or root for shared folders
    pinned: Identity | None
    mode: int
    purge: bool
    created_at: str
    options: dict[str, str]

    @property
    def adopted(self) -> bool:
        """Storage fixeduser found rather than made (a backend marks it): its top folder is never changed."""
        return self.options.get("adopted") == "true"


class MountRecord(BaseModel):
    """One container mount point's use of a volume, keyed by the daemon's mount ID."""

    model_config = ConfigDict(frozen=True)

    mount_id: str
    volume: str
    identity: Identity
    copy_up: bool = False  # mounted while a container create was in flight (see VolumeDriver)
    # What the stale-record pruner needs (absent in records written by older versions):
    containers: tuple[str, ...] = ()  # IDs of the container(s) this mount may be for
    mounted_at: float = 0.0  # wall-clock time of the Mount (compared with the daemon's FinishedAt)
    boot_id: str = ""  # the kernel boot it was mounted in: no mount survives a reboot


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@cache
def current_boot_id() -> str:
    """This boot's random ID (empty where the kernel has none)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def new_mount_record(
    mount_id: str, volume: str, identity: Identity, *, copy_up: bool = False, containers: tuple[str, ...] = ()
) -> MountRecord:
    return MountRecord(
        mount_id=mount_id,
        volume=volume,
        identity=identity,
        copy_up=copy_up,
        containers=containers,
        mounted_at=time.time(),
        boot_id=current_boot_id(),
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class VolumeRegistry:
    """Callers serialize changes per volume (the driver's volume locks); reads never wait."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._volumes = {
            name: VolumeRecord.model_validate_json(record)
            for name, record in store.query("SELECT name, record FROM volumes")
        }
        self._mounts = {
            (row[0], row[1]): MountRecord.model_validate(json.loads(row[2]))
            for row in store.query("SELECT mount_id, volume, record FROM mounts")
        }

    def get(self, name: str) -> VolumeRecord | None:
        return self._volumes.get(name)

    def names(self) -> list[str]:
        return sorted(self._volumes)

    def __contains__(self, name: object) -> bool:
        return name in self._volumes

    async def add(self, record: VolumeRecord) -> None:
        await self._store.write("INSERT OR REPLACE INTO volumes VALUES (?, ?)", (record.name, record.model_dump_json()))
        self._volumes[record.name] = record

    async def remove(self, name: str) -> None:
        await self._store.write("DELETE FROM volumes WHERE name = ?", (name,))
        self._volumes.pop(name, None)

    def mount(self, mount_id: str, volume: str) -> MountRecord | None:
        return self._mounts.get((mount_id, volume))

    async def add_mount(self, record: MountRecord) -> None:
        await self._store.write(
            "INSERT OR REPLACE INTO mounts VALUES (?, ?, ?)",
            (record.mount_id, record.volume, record.model_dump_json()),
        )
        self._mounts[(record.mount_id, record.volume)] = record

    async def remove_mount(self, mount_id: str, volume: str) -> MountRecord | None:
        """Forget a mount at once; its row goes behind (a crash before that commit leaves a record
        of a mount that is over, which the pruner drops: the safe direction, views stay up)."""
        record = self._mounts.pop((mount_id, volume), None)
        if record is not None:
            self._store.write_behind("DELETE FROM mounts WHERE mount_id = ? AND volume = ?", (mount_id, volume))
        return record

    def all_mounts(self) -> list[MountRecord]:
        return list(self._mounts.values())

    def mounts_of(self, volume: str) -> list[MountRecord]:
        return [m for m in self._mounts.values() if m.volume == volume]

    def users_of_identity(self, identity: Identity) -> int:
        return sum(1 for m in self._mounts.values() if m.identity == identity)

    def mounts_per_identity(self) -> Counter[str]:
        return Counter(m.identity.key for m in self._mounts.values())
