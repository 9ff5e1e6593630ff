"""The bindfs processes behind a view, found in /proc (shared by the backend and driver tests)."""

from __future__ import annotations

import os
from pathlib import Path


def bindfs_argv(pid: int) -> list[bytes]:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")


def bindfs_pids(mount_point: Path) -> list[int]:
    """PIDs of the bindfs processes serving `mount_point`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = bindfs_argv(int(proc.name))
        except OSError:
            continue
        if argv and argv[0].endswith(b"bindfs") and os.fsencode(mount_point) in argv:
            pids.append(int(proc.name))
    return pids
