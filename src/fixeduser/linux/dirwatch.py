"""The kernel's word that names in one directory changed (inotify), so a watcher need not poll it.

A poll costs a thread hop and a stat of every file, several times a second, on every host, for edits
that come a few times a day (bench/NOTES.md#policy-watch). inotify wakes the watcher at once instead.
The directories that symlinked files lead to are watched too. It still cannot see everything: a network
file system changed from another host, a link on the way to a file re-pointed outside the watched
directories, or the directory's path re-pointed to another directory. A watcher keeps a slow poll for those.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from pathlib import Path

from asyncinotify import Inotify, Mask

# Everything that can change a file's name, inode, size or mtime, and the directory itself going away.
CHANGES = (
    Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CLOSE_WRITE
    | Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
)
GONE = Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED | Mask.UNMOUNT


class DirectoryChanges:
    """Wakes a waiter when a name in `directory` (or in one of the directories `also`) is created, written,
    moved, removed or re-pointed.

    Raises OSError when the kernel refuses to watch `directory` (no inotify, or the user's watch limit
    reached); a directory in `also` it refuses is left to the caller's slow poll."""

    def __init__(self, directory: Path, also: Iterable[Path] = ()) -> None:
        self._inotify = Inotify()
        self._inotify.sync_timeout = 0  # `sync_get` only takes what has queued
        try:
            self._inotify.add_watch(directory, CHANGES)
            for other in also:
                with contextlib.suppress(OSError):
                    self._inotify.add_watch(other, CHANGES)
        except BaseException:
            self._inotify.close()
            raise
        self.lost = False  # a watched directory was removed or moved: this watch sees less than it should

    async def wait(self, within: float) -> bool:
        """Wait for a change, at most `within` s; True if one came. Everything queued is taken with it,
        so a burst of writes wakes the waiter once, not once per event."""
        try:
            async with asyncio.timeout(within):
                event = await self._inotify.get()
        except TimeoutError:
            return False
        self._note(event.mask)
        while (queued := self._inotify.sync_get()) is not None:
            self._note(queued.mask)
        return True

    def _note(self, mask: Mask) -> None:
        if mask & GONE:
            self.lost = True

    def close(self) -> None:
        self._inotify.close()
