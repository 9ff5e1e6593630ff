"""Read the kernel's mount table (`/proc/self/mountinfo`) and probe mount points.

Everything here is synchronous. Reading the table grows with every mount on the host, so a caller
that asks often keeps a `MountTable`, which reads it again only after the kernel says it changed.
`is_stale` asks the FUSE daemon (a hung one blocks it): call it off the event loop.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_MNT_ID = re.compile(rb"^mnt_id:\s*(\d+)$", re.MULTILINE)
# Block-device and memory file systems: no network, no user-space server. overlay is left out (its lower layers
# can be anything), and a type not named here is treated as one that can wait.
LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs", "zfs", "bcachefs"})


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


def escape(path: str) -> str:
    r"""A path as the kernel writes it in mountinfo (space, tab, newline and `\` as octal escapes)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


class MountTable:
    """The mounts at or below `below`, read again only after the mount table changed.

    The kernel marks an open mountinfo file with POLLPRI whenever a mount or unmount happens in the
    namespace, so between changes `entries` costs one epoll_wait that does not wait, instead of
    reading and parsing a table that holds every container's mounts. Polling the file consumes the
    mark, so nothing else may poll it: not an event loop either (an epoll that holds this one polls it).
    """

    def __init__(self, below: str, path: Path = MOUNTINFO) -> None:
        self._below = below.rstrip("/")
        self._needle = escape(self._below)
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (kept open: the change mark is per open file)
        self._epoll = select.epoll()
        self._epoll.register(self._file.fileno(), select.EPOLLPRI)
        self._entries = self._read()

    def entries(self) -> list[MountEntry]:
        """The mounts at or below `below`, in kernel order, as they are now."""
        # The mark is taken before the read: a change after it marks the file again.
        if self._epoll.poll(0):
            self._entries = self._read()
        return self._entries

    def at(self, path: str | os.PathLike[str]) -> list[MountEntry]:
        """The mounts stacked on `path` (at or below `below`), bottom first."""
        target = os.fspath(path)
        return [entry for entry in self.entries() if entry.mount_point == target]

    def _read(self) -> list[MountEntry]:
        self._file.seek(0)
        text = self._file.readall().decode("utf-8", errors="surrogateescape")
        lines = "\n".join(line for line in text.splitlines() if self._needle in line)
        prefix = self._below + "/"
        return [e for e in parse_mountinfo(lines) if e.mount_point == self._below or e.mount_point.startswith(prefix)]

    def close(self) -> None:
        self._epoll.close()
        self._file.close()


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


def top_mount_id(path: str | os.PathLike[str]) -> int:
    """The ID (as in mountinfo) of the mount on top at `path`, without asking its file system.

    An O_PATH open walks into the topmost mount's root without a request to it, so a hung FUSE
    daemon does not block this (a stat or statvfs would; both checked against a stopped bindfs).
    Raises OSError if `path` cannot be opened.
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return mount_id_of(fd)
    finally:
        os.close(fd)


def mount_id_of(fd: int) -> int:
    """The ID (as in mountinfo) of the mount the open file `fd` lies on, from the kernel's fdinfo."""
    info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(info, 4096)
    finally:
        os.close(info)
    match = _MNT_ID.search(text)
    if match is None:
        raise OSError(errno.EIO, f"no mnt_id in the fdinfo of file descriptor {fd}")
    return int(match.group(1))


def is_local_regular_file(fd: int) -> bool:
    """Whether `fd` is a regular file on a file system of this machine's disks or memory (`LOCAL_FILE_SYSTEMS`):
    a write there is a copy into the page cache. Not a pipe, socket or device, nor a file on a network or FUSE
    file system, whose writes can wait on another machine or process."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        mount_id = mount_id_of(fd)
    except OSError:
        return False
    return any(entry.mount_id == mount_id and entry.fstype in LOCAL_FILE_SYSTEMS for entry in read_mountinfo())


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
