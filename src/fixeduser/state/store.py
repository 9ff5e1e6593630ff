"""The plugin's persistent state: one SQLite file, written off the event loop.

Every table is small and mirrored in memory by its owner (ledger, registry); the database only
has to survive restarts. Writes go to one writer thread that commits whatever has queued up as
one transaction and then wakes the waiting coroutines: a decision never blocks on the disk, and
a burst of AuthZRes calls shares commits instead of paying a thread hand-off each, which costs
several times the SQL itself (bench/NOTES.md#state-writer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Write:
    sql: str
    params: tuple[Any, ...]
    done: asyncio.Future[None] | None  # None: nobody waits (`write_behind`)


_STOP = None
CHECKPOINT_EVERY = 200  # writes between WAL checkpoints (SQLite's own default is about 1,000 pages)
# Writes behind are handed to the writer thread together, at most this long after the first of them:
# each hand-off wakes the thread, and fewer, larger transactions cost less (bench/NOTES.md#state-writer).
BEHIND_DELAY = 0.005


class StateStore:
    """Thread-safe access to the state database; `write` commits in the writer thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL survives a crash of the plugin; only a power cut may lose the last rows,
        # and then mounts are gone anyway and unknown containers fail closed. FULL costs an fsync on
        # every container create's AuthZRes, which the docker CLI waits for.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A checkpoint fsyncs the database: run it after the waiting writers are answered, not
        # inside the commit of whichever write happens to fill the WAL (an AuthZRes p99 spike).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(_SCHEMA)
        self._uncheckpointed = 0
        self._queue: queue.SimpleQueue[list[_Write] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._behind: list[_Write] = []  # written behind, not yet handed to the writer thread
        self._writer_error: str | None = None  # why the last writer thread died, if one did

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._db.execute(sql, params)

    async def write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement; returns once it is committed (in order with every other write)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hand_over_behind()  # what was written behind before this commits before it
        self._enqueue([_Write(sql, params, done)])
        await done

    def write_behind(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Queue one statement and return at once; it commits in order with every other write.

        For rows that only mirror what the caller has already put in memory and that describe
        something the daemon has already done (a container it created, an exec, a removal): a
        crash before the commit (within `BEHIND_DELAY` and one commit) has the same effect as a
        crash just before the daemon's AuthZRes, a window that exists anyway. Waiting for the
        commit would cost each such AuthZRes a thread hand-off (bench/NOTES.md#state-writer). Writes
        behind reach the writer thread together, within `BEHIND_DELAY` of the first. A failure is
        logged.
        """
        self._behind.append(_Write(sql, params, None))
        if len(self._behind) > 1:
            return  # a hand-over is already scheduled
        try:
            asyncio.get_running_loop().call_later(BEHIND_DELAY, self._hand_over_behind)
        except RuntimeError:  # no event loop here (admin tools, tests): hand it over now
            self._hand_over_behind()

    def _hand_over_behind(self) -> None:
        if self._behind:
            batch, self._behind = self._behind, []
            self._enqueue(batch)

    def _enqueue(self, writes: list[_Write]) -> None:
        if self._writer is None:
            self._start_writer()
        self._queue.put(writes)

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._run_writer, name="fixeduser-state", daemon=True)
        self._writer.start()

    def _run_writer(self) -> None:
        try:
            self._write_batches()
        except BaseException as exc:  # noted for `watch_writer`, which starts another thread
            self._writer_error = f"{type(exc).__name__}: {exc}"
            log.exception("the state writer thread died")

    async def watch_writer(self, interval: float = 1.0) -> None:
        """Check the writer thread every `interval` seconds (a supervised background task): if it
        died, start another one for the writes still queued, then raise so that the death is
        logged, counted and shown in /healthz."""
        while True:
            await asyncio.sleep(interval)
            writer = self._writer
            if writer is not None and not writer.is_alive():
                self._start_writer()
                raise RuntimeError(f"the state writer thread died ({self._writer_error}); another one took over")

    def _write_batches(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writes = [w for part in batch if part is not None for w in part]
            stopping = None in batch
            if writes:
                try:
                    self._commit(writes)
                except Exception as exc:  # the thread must outlive any one failure
                    log.exception("state write failed")
                    _settle([(w, exc) for w in writes])
                self._uncheckpointed += len(writes)
            if stopping:
                self._checkpoint()
                return
            if self._uncheckpointed >= CHECKPOINT_EVERY and self._queue.empty():
                self._checkpoint()

    def _checkpoint(self) -> None:
        try:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._uncheckpointed = 0
        except sqlite3.Error as exc:  # the WAL keeps the rows; the next round tries again
            log.warning("state checkpoint failed", extra={"error": str(exc)})

    def _commit(self, writes: list[_Write]) -> None:
        """Commit `writes` as one transaction; if that fails, one by one, so each caller gets its own error."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for w in writes:
                        self._db.execute(w.sql, w.params)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            outcomes: list[tuple[_Write, Exception | None]] = [(w, None) for w in writes]
        except sqlite3.Error:
            outcomes = [(w, self._execute_alone(w)) for w in writes]
        _settle(outcomes)

    def _execute_alone(self, w: _Write) -> Exception | None:
        try:
            self.execute(w.sql, w.params)
        except sqlite3.Error as exc:
            return exc
        return None

    def close(self) -> None:
        self._hand_over_behind()
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        with self._lock:
            self._db.close()


def _settle(outcomes: list[tuple[_Write, Exception | None]]) -> None:
    """Wake the waiting coroutines: one hand-off per event loop, not per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, Exception | None]]] = {}
    for w, error in outcomes:
        if w.done is not None:
            by_loop.setdefault(w.done.get_loop(), []).append((w, error))
        elif error is not None:
            log.error("a state write failed", extra={"sql": w.sql[:80], "error": str(error)})
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, settled)
        except RuntimeError:  # the loop is closed: nobody waits any more
            log.warning("state writes finished after their event loop closed", extra={"writes": len(settled)})


def _resolve(settled: list[tuple[_Write, Exception | None]]) -> None:
    for w, error in settled:
        if w.done is None or w.done.done():
            continue
        if error is None:
            w.done.set_result(None)
        else:
            w.done.set_exception(error)


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
