"""The storage backend protocol behind the fixed-user volume driver.

A backend owns two things: the backing storage of each volume, and one *fixed-user view* per
storage identity: a mount through which every access is done as that identity's uid/gid whatever
uid the accessing process has. Docker bind-mounts `volume_path(identity, volume)` into containers.
Reference counting of views is the driver core's job, not the backend's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from fixeduser.policy.identity import Identity

VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_VOLUME_NAME = 255


class BackendError(RuntimeError):
    """A storage failure; the message is shown to docker users: say what failed and how to fix."""


def validate_volume_name(volume: str) -> str:
    """Return `volume` if it is a safe single path component, else raise BackendError."""
    if (
        not isinstance(volume, str)
        or volume in {".", ".."}
        or len(volume) > MAX_VOLUME_NAME
        or not VOLUME_NAME_RE.fullmatch(volume)
    ):
        raise BackendError(
            f"invalid volume name {volume!r}: use 1-{MAX_VOLUME_NAME} characters from "
            "[A-Za-z0-9_.-], starting with a letter or digit"
        )
    return volume


@runtime_checkable
class Backend(Protocol):
    """What the volume driver needs from a storage backend."""

    name: str
    scope: Literal["local", "global"]

    async def check(self) -> None:
        """Verify the host can serve volumes; BackendError lists every problem found."""
        ...

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        """Create the backing storage; an existing volume is kept as it is, never emptied.

        `options` are the volume's create options (backend-specific ones such as a tenant)."""
        ...

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        """Forget a volume; with `purge` delete its data without following symlinks/mounts."""
        ...

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        """Set the owner and mode of a volume's top folder; with `only_if_empty`, only of an empty one.

        Returns whether it was set."""
        ...

    async def volume_exists(self, volume: str) -> bool:
        """True if the backing storage of `volume` exists."""
        ...

    async def mount_identity(self, identity: Identity) -> Path:
        """Ensure the fixed-user view of `identity` is mounted (repairing a stale one); its root."""
        ...

    def volume_path(self, identity: Identity, volume: str) -> Path:
        """The path of `volume` inside the view of `identity`."""
        ...

    async def unmount_identity(self, identity: Identity) -> None:
        """Unmount the view of `identity`; nothing to do if it is not mounted."""
        ...

    async def mounted_identities(self) -> list[str]:
        """`Identity.key`s of the views currently mounted."""
        ...

    async def close(self) -> None:
        """Release resources held by the backend (mounted views are left alone)."""
        ...


@runtime_checkable
class ServiceCheck(Protocol):
    """A backend that depends on a remote service it can probe cheaply while serving (health only:
    at start-up the plugin must come up even while that service is down, or dockerd could not)."""

    async def check_service(self) -> None:
        """Raise BackendError saying why the service is unusable."""
        ...
