"""The state store: writes commit on the event loop, in order, each caller with its own error; writes behind
batch into one transaction; the WAL checkpoint runs on a thread and connection of its own."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from fixeduser.state import store as store_module
from fixeduser.state.store import StateStore
from tests.waiting import until

INSERT = "INSERT INTO volumes VALUES (?, ?)"
UPSERT = "INSERT OR REPLACE INTO volumes VALUES (?, ?)"


def _rows(path: Path) -> dict[str, str]:
    """What another connection sees: only what is committed."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT name, record FROM volumes").fetchall())
    finally:
        db.close()


async def test_concurrent_writes_are_all_committed_in_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    await asyncio.gather(*(store.write(INSERT, (f"v{i}", str(i))) for i in range(200)))
    await store.write("UPDATE volumes SET record = 'last' WHERE name = ?", ("v7",))
    store.close()
    reopened = StateStore(tmp_path / "state.db")  # what a restarted plugin reads
    rows = dict(reopened.query("SELECT name, record FROM volumes"))
    assert len(rows) == 200 and rows["v7"] == "last" and rows["v199"] == "199"
    reopened.close()


async def test_a_write_is_committed_in_the_calling_coroutine(tmp_path: Path) -> None:
    """No hand-off to a thread and back: the loop runs nothing else before the write returns, committed."""
    store = StateStore(tmp_path / "state.db")
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "another callback")
    await store.write(INSERT, ("x", "1"))
    assert ran == []
    assert _rows(tmp_path / "state.db") == {"x": "1"}
    store.close()


async def test_a_failing_write_fails_alone_and_the_rest_of_its_transaction_commits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes behind commit with the next write, in one transaction; when one statement fails, each runs alone:
    the caller of `write` gets its sqlite error, a write behind's is logged, and the others commit."""
    store = StateStore(tmp_path / "state.db")
    await store.write(INSERT, ("taken", "0"))
    store.write_behind(INSERT, ("a", "1"))
    store.write_behind(INSERT, ("taken", "behind"))  # primary key violation
    store.write_behind(INSERT, ("b", "2"))
    with caplog.at_level(logging.ERROR, logger="fixeduser.state.store"), pytest.raises(sqlite3.IntegrityError):
        await store.write(INSERT, ("taken", "again"))  # primary key violation
    assert [r.message for r in caplog.records] == ["a state write failed"]  # the one behind; the caller got its own
    assert _rows(tmp_path / "state.db") == {"taken": "0", "a": "1", "b": "2"}
    results = await asyncio.gather(
        store.write(INSERT, ("c", "3")), store.write(INSERT, ("c", "again")), return_exceptions=True
    )
    assert results[0] is None and isinstance(results[1], sqlite3.IntegrityError)
    assert _rows(tmp_path / "state.db") == {"taken": "0", "a": "1", "b": "2", "c": "3"}
    store.close()


async def test_close_finishes_the_writes_and_then_refuses_use(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    await store.write(INSERT, ("x", "1"))
    store.close()
    store.close()  # twice is once
    with pytest.raises(sqlite3.ProgrammingError):
        store.query("SELECT 1")  # closed means closed: nothing is written behind the caller's back
    with pytest.raises(sqlite3.ProgrammingError):
        await store.write(INSERT, ("y", "2"))


async def test_writes_behind_are_committed_in_order_with_awaited_writes(tmp_path: Path) -> None:
    """Queued writes need no waiting caller; they commit in queue order (a delete after an insert wins),
    before the next awaited write, and a failing one is only logged."""
    store = StateStore(tmp_path / "state.db")
    store.write_behind(INSERT, ("gone", "1"))
    store.write_behind(INSERT, ("gone", "duplicate"))  # fails alone: primary key
    store.write_behind("DELETE FROM volumes WHERE name = ?", ("gone",))
    store.write_behind(INSERT, ("kept", "2"))
    await store.write(UPSERT, ("kept", "3"))  # after everything queued before it: its value wins
    assert _rows(tmp_path / "state.db") == {"kept": "3"}
    store.write_behind(INSERT, ("last", "4"))
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    assert dict(reopened.query("SELECT name, record FROM volumes")) == {"kept": "3", "last": "4"}
    reopened.close()


async def test_writes_behind_commit_on_their_own_soon_after_in_one_transaction(tmp_path: Path) -> None:
    """Nobody awaits them and nothing else is written: they still reach the database within moments."""
    store = StateStore(tmp_path / "state.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    for i in range(3):
        store.write_behind(INSERT, (f"v{i}", str(i)))
    assert statements == []  # not yet: `BEHIND_DELAY` after the first
    await until(lambda: _rows(tmp_path / "state.db") == {"v0": "0", "v1": "1", "v2": "2"}, "the rows behind")
    assert [s.split(" ")[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
    store.close()


def test_outside_an_event_loop_a_write_behind_commits_at_once(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.write_behind(INSERT, ("now", "1"))
    assert _rows(tmp_path / "state.db") == {"now": "1"}
    store.close()


class _Checkpoints:
    """Stands in for the checkpoint's connection: notes the thread and result of each round, can hold the
    first one back until the test lets it go, or fail rounds."""

    def __init__(self, real: sqlite3.Connection, *, held: bool = False, failures: int = 0) -> None:
        self.real = real
        self.threads: list[int] = []
        self.results: list[tuple[int, int, int]] = []  # (busy, frames in the WAL, frames copied)
        self.inside = False
        self.entered = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.failures = failures

    def execute(self, sql: str) -> sqlite3.Cursor:
        self.threads.append(threading.get_ident())
        self.entered.set()
        assert self.release.wait(5)
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        self.inside = True
        try:
            result = self.real.execute(sql).fetchone()
        finally:
            self.inside = False
        self.results.append(result)
        return self.real.execute("SELECT ?, ?, ?", result)

    def close(self) -> None:
        self.real.close()


def _watch_checkpoints(store: StateStore, monkeypatch: pytest.MonkeyPatch, **how: Any) -> _Checkpoints:
    checkpoints = _Checkpoints(store._checkpoint_db, **how)
    monkeypatch.setattr(store, "_checkpoint_db", checkpoints)
    return checkpoints


def _started(store: StateStore) -> Future[bool]:
    assert store._checkpointing is not None, "no checkpoint started"
    return store._checkpointing


async def test_the_checkpoint_runs_on_its_own_thread_one_at_a_time_while_the_loop_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 3)
    store = StateStore(tmp_path / "state.db")
    checkpoints = _watch_checkpoints(store, monkeypatch, held=True)
    for i in range(3):
        await store.write(INSERT, (f"v{i}", str(i)))
    checkpoint = _started(store)
    await until(checkpoints.entered.is_set, "the checkpoint to start")
    for i in range(3, 10):  # the checkpoint is held on its thread: writes go on, and start no second one
        await asyncio.wait_for(store.write(INSERT, (f"v{i}", str(i))), 1)
    assert _started(store) is checkpoint and len(_rows(tmp_path / "state.db")) == 10
    checkpoints.release.set()
    await until(checkpoint.done, "the checkpoint to finish")
    assert checkpoint.result() is True
    assert len(set(checkpoints.threads)) == 1 and checkpoints.threads[0] != threading.get_ident()
    first, second = checkpoints.results  # the second round: nothing new to copy, so that was all
    assert first == second and first[0] == 0 and first[1] == first[2] > 0
    store.close()


async def test_a_checkpoint_copies_the_wal_while_the_loop_commits_and_the_wal_file_shrinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real PASSIVE checkpoint, on its own connection, takes no lock the loop's commits wait for (they wait
    10 ms at most, then fail); what they commit meanwhile it copies in another round, and once all of the WAL
    is copied the next commit starts it over and cuts its file back to `WAL_LIMIT`."""
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 40)
    monkeypatch.setattr(store_module, "WAL_LIMIT", 1 << 20)
    store = StateStore(tmp_path / "state.db")
    checkpoints = _watch_checkpoints(store, monkeypatch)
    wal = tmp_path / "state.db-wal"
    big = "x" * 200_000  # 40 of them: an 8 MB WAL, which takes the checkpoint a while to copy and fsync
    for i in range(39):
        await store.write(INSERT, (f"big{i}", big))
    assert wal.stat().st_size > 8_000_000 and checkpoints.threads == []
    await store.write(INSERT, ("big39", big))  # the 40th: the checkpoint starts
    checkpoint = _started(store)
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 1_000_000)  # no other one from here on
    during = written = 0
    while not checkpoints.results:  # its first round
        await store.write(UPSERT, ("small", str(written)))
        written += 1
        during += checkpoints.inside
        await asyncio.sleep(0)
    assert during > 0, "no commit on the loop while the checkpoint copied the WAL"
    await until(checkpoint.done, "the checkpoint to finish")
    assert checkpoint.result() is True and _started(store) is checkpoint
    rounds = checkpoints.results
    assert all(busy == 0 for busy, _, _ in rounds)
    assert rounds[0][2] >= 40 * 48  # the big rows (200 kB: 49 pages each), and maybe not a commit under way
    assert rounds[1][1] > rounds[0][1]  # the frames committed meanwhile, copied by the second round
    assert rounds[-1][1] == rounds[-1][2] == rounds[-2][1]  # and then nothing new: all of it
    assert wal.stat().st_size > 8_000_000  # PASSIVE leaves the file as it is
    await store.write(UPSERT, ("small", "last"))  # the WAL starts over
    assert wal.stat().st_size <= 1 << 20
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    assert len(reopened.query("SELECT name FROM volumes")) == 41
    reopened.close()


async def test_a_failed_checkpoint_is_logged_and_tried_again_after_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 3)
    store = StateStore(tmp_path / "state.db")
    checkpoints = _watch_checkpoints(store, monkeypatch, failures=1)
    with caplog.at_level(logging.WARNING, logger="fixeduser.state.store"):
        for i in range(3):
            await store.write(INSERT, (f"v{i}", str(i)))
        failed = _started(store)
        await until(failed.done, "the checkpoint to fail")
    assert failed.result() is False and [r.message for r in caplog.records] == ["state checkpoint failed"]
    await store.write(INSERT, ("v3", "3"))  # tries again
    retried = _started(store)
    assert retried is not failed
    await until(retried.done, "the second checkpoint to finish")
    assert retried.result() is True and checkpoints.results[-1][0] == 0
    await store.write(INSERT, ("v4", "4"))  # and then not before `CHECKPOINT_EVERY` writes
    assert _started(store) is retried
    store.close()


async def test_close_checkpoints_and_the_rows_survive_reopening(tmp_path: Path) -> None:
    """`close` copies the WAL into the database file (SQLite itself does only when the last connection to it
    closes; here a reader stays), and a reopened store reads every row, those written behind too."""
    path = tmp_path / "state.db"
    store = StateStore(path)
    await store.write(INSERT, ("awaited", "1"))
    store.write_behind(INSERT, ("behind", "2"))
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM volumes").fetchall() == [(1,)]  # behind: not yet committed
    store.close()
    shutil.copy(path, tmp_path / "file-alone.db")  # the database file without its WAL
    assert _rows(tmp_path / "file-alone.db") == {"awaited": "1", "behind": "2"}
    reader.close()
    reopened = StateStore(path)
    assert dict(reopened.query("SELECT name, record FROM volumes")) == {"awaited": "1", "behind": "2"}
    reopened.close()
