"""Follow a process by a pidfd: the kernel makes it readable when the process exits.

A pidfd names one process for good: unlike a PID it cannot come to name another process after the
first one exits. A process found again by its PID (after a restart of the plugin) is checked by
its start time, which a later process with the same PID does not share.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def stat_fields(pid: int, *, proc: Path = PROC) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (proc(5): the first is field 3, the state); None if
    there is no such process."""
    try:
        text = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ")": fields follow the last ")".
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int, *, proc: Path = PROC) -> int | None:
    """The process's start time in clock ticks since boot (proc(5), stat field 22); None if there is none."""
    try:
        return int((stat_fields(pid, proc=proc) or [])[19])
    except (IndexError, ValueError):
        return None


@dataclass(eq=False)
class Followed:
    """One process held by a pidfd; `child` is set for a process this one started (it is reaped here)."""

    pid: int
    started: int
    pidfd: int
    child: subprocess.Popen[bytes] | None = None
    _poller: select.poll = field(default_factory=select.poll, repr=False)

    def __post_init__(self) -> None:
        self._poller.register(self.pidfd, select.POLLIN)

    def exited(self) -> bool:
        """True once the process has exited (one poll(2) with no wait; a child is reaped then)."""
        if self.pidfd < 0:
            return True
        if not self._poller.poll(0):
            return False
        if self.child is not None:
            self.child.poll()
        return True

    def exit_status(self) -> int | None:
        """The exit status of a child that has exited (None for a process this one did not start)."""
        return self.child.poll() if self.child is not None else None

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def follow_child(child: subprocess.Popen[bytes]) -> Followed:
    """Follow a process this one started. Call it before anything may reap the child: until then its
    PID cannot name another process."""
    pidfd = os.pidfd_open(child.pid)
    return Followed(child.pid, start_time(child.pid) or 0, pidfd, child)


def follow(pid: int, started: int) -> Followed | None:
    """Follow the process `pid` if it is still the one that started at `started`; else None."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # gone (ESRCH), or no pidfds here
        return None
    # Checked after opening: if the PID named the expected process then, the pidfd names it now.
    if start_time(pid) != started:
        os.close(pidfd)
        return None
    return Followed(pid, started, pidfd)


def close_quietly(followed: Followed | None) -> None:
    if followed is not None:
        with contextlib.suppress(OSError):
            followed.close()
