"""The plugin's persistent state: one SQLite file, written on the event loop, checkpointed off it.

Every table is small and mirrored in memory by its owner (ledger, registry); the database only has
to survive restarts. In WAL mode with synchronous=NORMAL a commit writes to the page cache, in less
time than a hand-off to a thread and back, so a write commits in the coroutine that makes it. What
fsyncs, the WAL checkpoint, runs on a thread of its own through a second connection and takes no
lock the loop's commits wait for; only the first commit after it, which starts the WAL over, fsyncs
the WAL's header on the loop (bench/NOTES.md#state-writer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
    volumes TEXT NOT NULL, restart INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mounts (
    mount_id TEXT NOT NULL, volume TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (mount_id, volume)
);
"""

_Write = tuple[str, tuple[Any, ...]]

# Commits between WAL checkpoints (each adds a few pages; SQLite's own default is about 1,000 pages).
# Commits, not statements: the commit after a checkpoint starts the WAL over, which fsyncs its header
# on the loop (bench/NOTES.md#state-writer), and a batch written behind is one commit.
CHECKPOINT_EVERY = 200
CHECKPOINT_ROUNDS = 4  # passes of one checkpoint, each copying what was committed during the one before
# Writes behind commit together, at most this long after the first of them: one transaction for
# a burst costs less than one each (bench/NOTES.md#state-writer).
BEHIND_DELAY = 0.005
# A PASSIVE checkpoint lets the next commit start the WAL over, but its file stays as large as it
# ever grew; that commit cuts it back to this many bytes (a truncate, no fsync).
WAL_LIMIT = 4 << 20


class StateStore:
    """The state database, used on the event loop's thread; its checkpoints run on a thread of their own."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Nothing else writes this file (`fixeduser explain` builds a store of its own): the write lock
        # is held by this connection, for microseconds by the checkpoint's when it reads the WAL index
        # while a commit updates it, or by a stranger (a second plugin on the same --state-dir, an
        # sqlite3 shell in a transaction). A commit waits 10 ms for it, never seconds: then it fails.
        self._db = sqlite3.connect(path, timeout=0.01, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL survives a crash of the plugin; only a power cut may lose the last rows,
        # and then mounts are gone anyway and unknown containers fail closed. FULL costs an fsync on
        # every container create's AuthZRes, which the docker CLI waits for.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A checkpoint fsyncs the database: never inside a commit on the loop (an AuthZRes p99 spike).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        self._db.executescript(_SCHEMA)
        self._behind: list[_Write] = []  # written behind, not yet committed
        self._uncheckpointed = 0
        # Not asyncio.to_thread: the default executor also runs probes that can hang on a FUSE file
        # system, and `close` (not a coroutine) has to wait for a running checkpoint.
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fixeduser-checkpoint")
        self._checkpoint_db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._checkpointing: Future[bool] | None = None
        self._closed = False

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._db.execute(sql, params)

    async def write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement and commit it, here and now, after what was written behind before it.

        Its error, an `sqlite3.Error`, is raised here; a write behind's is only logged."""
        batch, self._behind = [*self._behind, (sql, params)], []
        *behind, error = self._commit(batch)
        _log_failures(batch, behind)  # all but the last, the caller's
        if error is not None:
            raise error

    def write_behind(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Queue one statement and return at once; it commits in order with every other write.

        For rows that only mirror what the caller has already put in memory and that describe
        something the daemon has already done (a container it created, an exec, a removal): a
        crash before the commit (within `BEHIND_DELAY`) has the same effect as a crash just before
        the daemon's AuthZRes, a window that exists anyway. Writes behind commit in one transaction,
        `BEHIND_DELAY` after the first of them or with the next `write`, before it; outside an event
        loop at once. A failure is logged.
        """
        self._behind.append((sql, params))
        if len(self._behind) > 1:
            return  # a commit is already scheduled
        try:
            asyncio.get_running_loop().call_later(BEHIND_DELAY, self._commit_behind)
        except RuntimeError:  # no event loop here (admin tools, tests): commit now
            self._commit_behind()

    def _commit_behind(self) -> None:
        if self._behind:
            batch, self._behind = self._behind, []
            _log_failures(batch, self._commit(batch))

    def _commit(self, writes: list[_Write]) -> list[sqlite3.Error | None]:
        """Commit `writes` in one transaction; if that fails, one by one, so that each fails alone.
        Returns each one's error."""
        if len(writes) > 1:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in writes:
                        self._db.execute(sql, params)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error:
                pass  # one by one, below
            else:
                self._committed(1)
                return [None] * len(writes)
        errors = [self._execute_alone(sql, params) for sql, params in writes]
        self._committed(errors.count(None))
        return errors

    def _execute_alone(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Error | None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            return exc
        return None

    def _committed(self, commits: int) -> None:
        """Start a checkpoint every `CHECKPOINT_EVERY` commits, and after the next one when the last one failed."""
        if not commits:
            return
        self._uncheckpointed += commits
        last = self._checkpointing
        if last is not None and not last.done():
            return  # one at a time
        if self._uncheckpointed >= CHECKPOINT_EVERY or (last is not None and not last.result()):
            self._uncheckpointed = 0
            self._checkpointing = self._checkpointer.submit(self._checkpoint)

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database file and fsync both, on the checkpoint thread with its own connection.

        PASSIVE neither takes the write lock nor waits for readers: commits on the loop go on meanwhile.
        The WAL starts over (at the next commit) only once all of it is copied, so what was committed
        meanwhile is copied in another round, a few at most. Whether it did not fail."""
        last_frames = -1
        try:
            for _ in range(CHECKPOINT_ROUNDS):
                busy, frames, copied = self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy:
                    return False
                if frames < last_frames or (frames == last_frames and copied == frames):
                    break  # the WAL started over, or nothing was committed since the last round
                last_frames = frames
        except Exception as exc:  # the WAL keeps the rows; the next write tries again
            log.warning("state checkpoint failed", extra={"error": str(exc)})
            return False
        return True

    def close(self) -> None:
        """Commit what was written behind, checkpoint (after a running checkpoint) and close."""
        if self._closed:
            return
        self._closed = True
        self._commit_behind()
        self._checkpointer.shutdown(wait=True)
        self._checkpoint()
        self._checkpoint_db.close()
        self._db.close()


def _log_failures(writes: list[_Write], errors: list[sqlite3.Error | None]) -> None:
    for (sql, _), error in zip(writes, errors, strict=False):
        if error is not None:
            log.error("a state write failed", extra={"sql": sql[:80], "error": str(error)})


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
