"""What fixeduser records about volumes and mounts: the wire format of its state, on one host or many."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fixeduser.policy.identity import Identity


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
