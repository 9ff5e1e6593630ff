"""Which bindfs views are alive, known from events rather than by asking each view.

A view is up while the bindfs process serving it runs and its mount is the one on top of the
mount point. Both are known from the kernel without a request to the view: a pidfd of the bindfs
(started here, or adopted after a restart through the record the start left), readable once it
exits; and the ID of the mount on top of the mount point, read through an O_PATH descriptor that
FUSE never sees. The mount table, re-read only after the kernel marks it changed, tells the rest
(absent, covered, adoptable). So a Mount finds a view up without a trip through FUSE or a thread,
and a view whose process died or whose mount vanished (or was covered) is stale at once, with no
timer window in which it would be handed out (bench/NOTES.md#view-liveness).

A view this code did not start and cannot adopt (mounted by an older version) is probed as before,
off the event loop, until it is mounted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fixeduser.linux.mounts import MountEntry, MountTable, is_mount_point, is_stale, top_mount_id
from fixeduser.linux.processes import Followed, close_quietly, follow, follow_child

log = logging.getLogger(__name__)

State = Literal["up", "stale", "absent"]
PROBE_TIMEOUT = 10.0
RECORD_NAME = "bindfs.pid"  # in the identity's guard: only root can read or write it
LOG_NAME = "bindfs.log"  # the view's bindfs writes its messages here (it outlives the plugin: no pipe)
LOG_TAIL = 2000  # characters of the log shown in an error
MOUNT_POLL = 0.005  # seconds between looks at the mount table while a bindfs starts (it takes 20-50 ms)


@dataclass(eq=False)
class _View:
    process: Followed
    mount_id: int


class ViewStartError(Exception):
    """bindfs did not bring a view up: why, and what it wrote."""

    def __init__(self, reason: str, output: str) -> None:
        super().__init__(f"{reason}: {output}")
        self.reason = reason
        self.output = output


class Views:
    """The bindfs views below `mount_root`, followed by pidfd and by the mount table's change mark."""

    def __init__(self, mount_root: Path) -> None:
        self._mount_root = mount_root
        self._table: MountTable | None = None
        self._views: dict[str, _View] = {}
        self._unfollowed: dict[str, int] = {}  # mount point -> mount ID of a view no process is known for

    def table(self) -> MountTable:
        if self._table is None:
            self._table = MountTable(str(self._mount_root))
        return self._table

    def mounts_at(self, mp: Path) -> list[MountEntry]:
        return self.table().at(mp)

    def mounted(self) -> list[MountEntry]:
        """Every mount at or below `mount_root`."""
        return self.table().entries()

    async def state(self, mp: Path, guard: Path) -> State:
        """Whether a working view is mounted on `mp`: from the followed process and the mount on top
        of `mp`; else from the mount table, or, for a view nobody follows, by a probe off the event loop."""
        if self._is_up(mp):
            return "up"
        stacked = self.mounts_at(mp)
        if not stacked:
            return "absent"
        view = self._views.get(str(mp)) or self._adopt(mp, guard, stacked[-1])
        if view is not None:
            return "stale" if view.process.exited() or stacked[-1].mount_id != view.mount_id else "up"
        return await _probe(mp)

    def _is_up(self, mp: Path) -> bool:
        """A followed view whose bindfs runs and whose mount is the one on top of `mp`. The top mount is
        asked of `mp` itself: the mount table changes with every container's own mounts, so it would
        be read again at nearly every Mount (bench/NOTES.md#view-liveness)."""
        view = self._views.get(str(mp))
        if view is None or view.process.exited():
            return False
        try:
            return top_mount_id(mp) == view.mount_id
        except OSError:
            return False

    def _adopt(self, mp: Path, guard: Path, top: MountEntry) -> _View | None:
        """The view on `mp` as its start recorded it, if that bindfs still runs and its mount is on top."""
        if self._unfollowed.get(str(mp)) == top.mount_id:
            return None
        view = _read_record(guard / RECORD_NAME)
        if view is None or view.mount_id != top.mount_id:
            close_quietly(view.process if view else None)
            self._unfollowed[str(mp)] = top.mount_id
            return None
        self._follow(mp, view)
        log.info("adopted view %s (bindfs pid %d)", mp, view.process.pid)
        return view

    async def start(self, argv: Sequence[str], env: Mapping[str, str], mp: Path, guard: Path, limit: float) -> None:
        """Run bindfs (`argv`, which keeps it in the foreground) until its mount is on `mp`; follow it from then on.

        Raises ViewStartError if bindfs exits or the mount does not appear within `limit` seconds; the caller
        then clears the mount point."""
        self.forget(mp)
        before = {entry.mount_id for entry in self.mounts_at(mp)}
        child = await asyncio.to_thread(_spawn, argv, env, guard / LOG_NAME)
        process = follow_child(child)
        try:
            mount_id = await self._wait_for_mount(mp, before, process, guard / LOG_NAME, limit)
            await _wait_until_served(mp, process, guard / LOG_NAME, limit)
        except BaseException:
            await _stop(process)
            raise
        view = _View(process, mount_id)
        _write_record(guard / RECORD_NAME, view)
        self._follow(mp, view)

    async def _wait_for_mount(self, mp: Path, before: set[int], process: Followed, log_path: Path, limit: float) -> int:
        """The ID of the mount bindfs puts on `mp`. The mount table is looked at every `MOUNT_POLL` seconds (an
        event loop must not poll its change mark, see MountTable); an exit is seen at once through the pidfd."""
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        loop.add_reader(process.pidfd, exited.set)
        try:
            async with asyncio.timeout(limit):
                while True:
                    new = [entry for entry in self.mounts_at(mp) if entry.mount_id not in before]
                    if new:
                        return new[0].mount_id
                    if process.exited():
                        raise _exit_error(process, log_path)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(exited.wait(), MOUNT_POLL)
        except TimeoutError:
            raise ViewStartError(f"timed out after {limit:g}s", _log_tail(log_path)) from None
        finally:
            loop.remove_reader(process.pidfd)

    def _follow(self, mp: Path, view: _View) -> None:
        self._unfollowed.pop(str(mp), None)
        self._views[str(mp)] = view
        with contextlib.suppress(RuntimeError):  # no running loop: `exited` still answers when asked
            asyncio.get_running_loop().add_reader(view.process.pidfd, self._exited, mp, view)

    def _exited(self, mp: Path, view: _View) -> None:
        """The kernel says a followed bindfs exited: reap it and say so (the next Mount remounts the view)."""
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_reader(view.process.pidfd)
        view.process.exited()
        if self._views.get(str(mp)) is view:
            log.warning("the bindfs of view %s exited (status %s): it is stale", mp, view.process.exit_status())

    def ended(self, mp: Path, guard: Path) -> ViewStartError | None:
        """Why the view started on `mp` is gone, if its bindfs has exited: its exit status and words (None while
        it runs, or when no start of it is followed)."""
        view = self._views.get(str(mp))
        if view is None or not view.process.exited():
            return None
        return _exit_error(view.process, guard / LOG_NAME)

    def forget(self, mp: Path) -> None:
        """Stop following the view on `mp` (it is being unmounted or replaced)."""
        self._unfollowed.pop(str(mp), None)
        view = self._views.pop(str(mp), None)
        if view is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(view.process.pidfd)
            view.process.exited()  # reaps a child that is already gone
            view.process.close()

    def close(self) -> None:
        for mp in list(self._views):
            self.forget(Path(mp))
        if self._table is not None:
            self._table.close()
            self._table = None


def _spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # Its own session: a signal to the plugin's process group does not take the views along.
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/", env=dict(env), start_new_session=True
        )
    finally:
        os.close(fd)


async def _stop(process: Followed) -> None:
    """Kill a bindfs that did not come up, and reap it."""
    if process.child is not None and process.child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.child.kill()
        await asyncio.to_thread(process.child.wait)
    process.close()


def _exit_error(process: Followed, log_path: Path) -> ViewStartError:
    """A bindfs that has exited, in its own words: its exit status and the end of its log."""
    return ViewStartError(f"bindfs exit status {process.exit_status()}", _log_tail(log_path))


def _log_tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "no error output"
    return text[-LOG_TAIL:] or "no error output"


def _write_record(path: Path, view: _View) -> None:
    """Note the view's bindfs and mount in the guard, for the next plugin process to adopt."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{view.process.pid} {view.process.started} {view.mount_id}\n")
    os.replace(tmp, path)


def _read_record(path: Path) -> _View | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, encoding="ascii", errors="replace") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o022:  # only root's own record counts
            return None
        fields = f.read(200).split()
    try:
        pid, started, mount_id = (int(x) for x in fields)
    except ValueError:
        return None
    process = follow(pid, started)
    return _View(process, mount_id) if process is not None else None


async def _wait_until_served(mp: Path, process: Followed, log_path: Path, limit: float) -> None:
    """A bindfs whose mount appeared has started only once the mount answers through FUSE: bindfs mounts before
    libfuse has parsed every option, so a rejected option shows as a mount that vanishes with its process (seen
    in one start in about twenty). Raises ViewStartError, with bindfs's exit status once it has exited."""
    if await _probe(mp) == "up" and not process.exited():
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(process.pidfd, exited.set)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited.wait(), limit)
    finally:
        loop.remove_reader(process.pidfd)
    if process.exited():
        raise _exit_error(process, log_path)
    raise ViewStartError("its mount does not answer", _log_tail(log_path))


async def _probe(mp: Path) -> State:
    """The old way, for a view nobody follows: two lstat calls and a statvfs through FUSE, in a thread
    (a hung FUSE daemon blocks whoever asks it)."""

    def probe() -> State:
        if not os.path.ismount(mp) and not is_mount_point(mp):
            return "absent"
        return "stale" if is_stale(mp) else "up"

    try:
        return await asyncio.wait_for(asyncio.to_thread(probe), PROBE_TIMEOUT)
    except TimeoutError:
        return "stale"
