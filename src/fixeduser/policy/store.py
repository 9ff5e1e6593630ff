"""The live policy: built beside the old one, validated, and swapped in with one assignment.

Where the lines come from is a `PolicyLoader`: a policy directory (`DirectoryLoader`) or a
PostgreSQL table shared by many hosts (`fixeduser.policy.database.DatabaseLoader`). Either way a
new policy is compiled off the event loop, checked completely, and only then published; readers
take `store.current` once per decision, so no request ever sees a half-loaded policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from fixeduser.linux.dirwatch import DirectoryChanges
from fixeduser.policy.compiled import CompiledPolicy, compile_policy
from fixeduser.policy.files import MODEL_FILE, POLICY_GLOB, PolicyProblem, read_policy_dir

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int, int], ...]
FALLBACK_POLL = 2.0  # s between looks at the policy files when inotify watches them


class PolicyInvalid(Exception):
    def __init__(self, problems: tuple[PolicyProblem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class PolicyLoader(Protocol):
    """A place policies are read from."""

    @property
    def description(self) -> str: ...

    def load(self, previous: CompiledPolicy | None = None) -> CompiledPolicy:
        """Read and compile the policy (blocking; called in a worker thread). Never raises PolicyInvalid.

        `previous` is the policy in force, whose unchanged parts may be reused."""
        ...


def load_policy(directory: Path) -> CompiledPolicy:
    """Read and compile a policy directory; PolicyInvalid lists every problem found."""
    with compiling(freeze=False):
        return _checked(compile_policy(read_policy_dir(directory)))


def _checked(policy: CompiledPolicy) -> CompiledPolicy:
    if policy.problems:
        raise PolicyInvalid(policy.problems)
    return policy


class DirectoryLoader:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def description(self) -> str:
        return str(self.directory)

    def load(self, previous: CompiledPolicy | None = None) -> CompiledPolicy:
        source = read_policy_dir(self.directory, previous=previous.source if previous is not None else None)
        return compile_policy(source, previous=previous)

    def fingerprint(self) -> Fingerprint:
        """Name, inode, mtime and size of every file a policy is read from."""
        entries = []
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def linked_directories(self) -> list[Path]:
        """The other directories the policy files lead to through symlinks: where their edits happen."""
        found = set()
        for path in self._files():
            if path.is_symlink():
                found.add(Path(os.path.realpath(path)).parent)
        found.discard(Path(os.path.realpath(self.directory)))
        return sorted(found)

    def _files(self) -> list[Path]:
        return [self.directory / MODEL_FILE, *sorted(self.directory.glob(POLICY_GLOB))]


def rejection_message(version: str, problems: tuple[PolicyProblem, ...]) -> str:
    """One log message for a rejected policy: every problem, each with its file and line."""
    listing = "\n".join(f"  {problem}" for problem in problems)
    return f"policy reload rejected ({len(problems)} problem(s)), keeping version {version}:\n{listing}"


class PolicyStore:
    """Holds the policy in force. Readers take `current` once per decision; it never changes under them."""

    def __init__(self, directory: Path, *, loader: PolicyLoader | None = None) -> None:
        self.directory = directory
        self._directory_loader = DirectoryLoader(directory)
        self.loader: PolicyLoader = loader or self._directory_loader
        with compiling(freeze=True):
            self.current = _checked(self.loader.load())
        self.loaded_at = time.time()
        self.reloads = 0
        self.failed_reloads = 0
        self.last_error: str | None = None
        self._fingerprint = self._directory_loader.fingerprint()
        self._lock = asyncio.Lock()
        self._watch_refused = False  # logged once; polling meanwhile

    async def reload(self, reason: str = "requested") -> bool:
        """Build a new policy off the event loop; keep the old one if the new one has any problem."""
        async with self._lock:  # a SIGHUP during a file-triggered reload waits, then reads again
            try:
                policy = await asyncio.to_thread(_compile_with, self.loader, self.current)
            except Exception as exc:  # a database that is down, a file that vanished mid-read, ...
                self.failed_reloads += 1
                self.last_error = f"cannot read the policy from {self.loader.description}: {exc}"
                log.error("%s; keeping version %s", self.last_error, self.current.version, extra={"reason": reason})
                return False
            if policy.problems:
                self.failed_reloads += 1
                self.last_error = rejection_message(self.current.version, policy.problems)
                log.error(
                    self.last_error,
                    extra={
                        "reason": reason,
                        "policy_version": self.current.version,
                        "problems": [{"file": p.file, "line": p.line, "problem": p.message} for p in policy.problems],
                    },
                )
                return False
            self.last_error = None
            if policy.version != self.current.version:
                self.current = policy  # the one assignment readers can observe
                self.loaded_at = time.time()
                self.reloads += 1
                log.info(
                    "policy version %s in force (%s lines, %s)",
                    policy.version,
                    len(policy.source.lines),
                    reason,
                    extra={"policy_version": policy.version, "reason": reason},
                )
            return True

    async def watch(self, interval: float = 0.25, settle: float = 0.1, fallback: float = FALLBACK_POLL) -> None:
        """Reload whenever a policy file changes (inode, mtime or size), once it has stopped changing.

        The kernel says when a name in the directory, or in a directory its symlinked files lie in, changes
        (inotify; the watch is made anew after each change, as links may lead elsewhere then); a look every
        `fallback` s still catches what it cannot see (`fixeduser.linux.dirwatch`). Without inotify, a look
        every `interval` s."""
        changes: DirectoryChanges | None = None
        try:
            while True:
                changes = await self._until_next_look(changes, interval, fallback)
                fingerprint = await asyncio.to_thread(self._directory_loader.fingerprint)
                if fingerprint == self._fingerprint:
                    continue
                if changes is not None:  # watch anew: the links may lead elsewhere now, or the path was re-pointed
                    changes.lost = True
                self._fingerprint = await self._settled(fingerprint, settle)
                # With a database loader the lines live in the database; the directory only holds the model.
                from_files = self.loader is self._directory_loader
                await self.reload("policy files changed" if from_files else "model file changed")
        finally:
            if changes is not None:
                changes.close()

    async def _until_next_look(
        self, changes: DirectoryChanges | None, interval: float, fallback: float
    ) -> DirectoryChanges | None:
        """Wait until the files are to be looked at: a change the kernel reports, or `fallback` s; without a
        watch, `interval` s. Returns the watch to use next; a new one saw nothing from before it, so the files
        are looked at at once."""
        if changes is not None and not changes.lost:
            await changes.wait(fallback)
            return changes
        changes = await self._directory_changes(changes)
        if changes is None:
            await asyncio.sleep(interval)
        return changes

    async def _settled(self, fingerprint: Fingerprint, settle: float) -> Fingerprint:
        """An editor may write a file in several steps: look again until two looks agree."""
        while True:
            await asyncio.sleep(settle)
            again = await asyncio.to_thread(self._directory_loader.fingerprint)
            if again == fingerprint:
                return fingerprint
            fingerprint = again

    async def _directory_changes(self, previous: DirectoryChanges | None) -> DirectoryChanges | None:
        """A new inotify watch of the policy directory and of the directories its symlinked files lead to, or None
        (a poll this time) when the kernel refuses one: no inotify, the watch limit reached, the directory gone for
        now."""
        if previous is not None:
            previous.close()
        linked = await asyncio.to_thread(self._directory_loader.linked_directories)
        try:
            changes = DirectoryChanges(self.directory, also=linked)
        except OSError as exc:
            if not self._watch_refused:
                log.warning("cannot watch %s (%s): polling it for policy edits instead", self.directory, exc)
            self._watch_refused = True
            return None
        self._watch_refused = False
        return changes


def _compile_with(loader: PolicyLoader, previous: CompiledPolicy) -> CompiledPolicy:
    with compiling(freeze=True):
        return loader.load(previous)


_compiling_lock = threading.Lock()


@contextlib.contextmanager
def compiling(*, freeze: bool) -> Iterator[None]:
    """Keep the event loop responsive, and later collections cheap, while a policy compiles.

    Compiling is pure Python in a worker thread. With the default switch interval every decision
    made meanwhile could wait for the GIL many times over, so it is a tenth of it here. A policy of
    100,000 lines is about a million long-lived objects: left to the cyclic garbage collector,
    they trigger collections that scan all of them while holding the GIL (long stalls of the event
    loop during a reload: bench/NOTES.md#policy-compile). So the collector
    pauses while compiling, and in the serving plugin (`freeze`) the objects alive afterwards go
    to the permanent generation (`gc.freeze`), which collections skip. They are still freed by
    reference counting when the policy is replaced (policies hold no reference cycles). A
    collection first clears the garbage cycles made so far, so none are frozen; what the event
    loop had in flight at that moment and later drops as a cycle stays (a few kB per reload).
    """
    with _compiling_lock:
        previous = sys.getswitchinterval()
        if freeze:
            gc.collect()
        gc.disable()
        sys.setswitchinterval(0.0005)
        try:
            yield
        finally:
            sys.setswitchinterval(previous)
            if freeze:
                gc.freeze()
            gc.enable()
