"""Read the kernel's mount table (`/proc/self/mountinfo`) and probe mount points.

Everything here is synchronous and cheap (one small procfs read or one stat); async callers may
call it directly.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of mountinfo: where something is mounted, its filesystem type and its source."""

    mount_point: str
    fstype: str
    source: str
    mount_id: int = 0
    parent_id: int = 0
    options: str = ""


def unescape(field: str) -> str:
    r"""Decode the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the text of a mountinfo file (see proc(5)); malformed lines are skipped."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        entries.append(
            MountEntry(
                mount_point=unescape(fields[4]),
                fstype=unescape(fields[sep + 1]),
                source=unescape(fields[sep + 2]),
                mount_id=mount_id,
                parent_id=parent_id,
                options=fields[5],
            )
        )
    return entries


def read_mountinfo(path: Path = MOUNTINFO) -> list[MountEntry]:
    """The mounts of this process's mount namespace, in kernel order (parents before children)."""
    return parse_mountinfo(path.read_text(encoding="utf-8", errors="surrogateescape"))


def canonical(path: str | os.PathLike[str]) -> str:
    """An absolute path with the parent's symlinks resolved, without touching the last component.

    The last component is left alone on purpose: stat-ing a dead FUSE mount point fails with
    ENOTCONN, and the mount table lists the mount point under the name it was mounted on.
    """
    p = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(p)
    if not name:  # "/"
        return p
    return os.path.join(os.path.realpath(parent), name)


def is_mount_point(path: str | os.PathLike[str]) -> bool:
    """True if something is mounted exactly on `path` (stale FUSE mounts included)."""
    target = canonical(path)
    return any(entry.mount_point == target for entry in read_mountinfo())


def mounts_at(path: str | os.PathLike[str]) -> list[MountEntry]:
    """All mounts stacked on `path`, bottom first."""
    target = canonical(path)
    return [entry for entry in read_mountinfo() if entry.mount_point == target]


def mounts_below(path: str | os.PathLike[str]) -> list[MountEntry]:
    """Mounts on `path` or anywhere beneath it, deepest (last mounted) first: unmount order."""
    target = canonical(path)
    prefix = target.rstrip("/") + "/"
    found = [entry for entry in read_mountinfo() if entry.mount_point == target or entry.mount_point.startswith(prefix)]
    return list(reversed(found))


def is_stale(path: str | os.PathLike[str]) -> bool:
    """True if `path` is a FUSE mount whose daemon is gone ("Transport endpoint is not connected")."""
    # statvfs goes to the FUSE daemon every time; stat can be answered from the kernel's attribute
    # cache for about a second after the daemon died.
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False
