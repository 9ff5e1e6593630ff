"""The state store's writer thread: writes are committed in order, batched, and each caller gets its own error."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from fixeduser.app.supervise import Supervisor
from fixeduser.state.store import CHECKPOINT_EVERY, StateStore
from tests.waiting import until

INSERT = "INSERT INTO volumes VALUES (?, ?)"


async def test_concurrent_writes_are_all_committed_in_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    await asyncio.gather(*(store.write(INSERT, (f"v{i}", str(i))) for i in range(200)))
    await store.write("UPDATE volumes SET record = 'last' WHERE name = ?", ("v7",))
    store.close()
    reopened = StateStore(tmp_path / "state.db")  # what a restarted plugin reads
    rows = dict(reopened.query("SELECT name, record FROM volumes"))
    assert len(rows) == 200 and rows["v7"] == "last" and rows["v199"] == "199"
    reopened.close()


async def test_a_failing_write_fails_alone_and_the_rest_of_its_batch_commits(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    await store.write(INSERT, ("taken", "0"))
    results = await asyncio.gather(
        store.write(INSERT, ("a", "1")),
        store.write(INSERT, ("taken", "again")),  # primary key violation
        store.write(INSERT, ("b", "2")),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert dict(store.query("SELECT name, record FROM volumes")) == {"taken": "0", "a": "1", "b": "2"}
    store.close()


async def test_close_finishes_the_writes_and_then_refuses_use(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    await store.write(INSERT, ("x", "1"))
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.query("SELECT 1")  # closed means closed: nothing is written behind the caller's back


async def test_writes_behind_are_committed_in_order_with_awaited_writes(tmp_path: Path) -> None:
    """Queued writes need no waiting caller; they commit in queue order (a delete after an insert wins), and a
    failing one is only logged."""
    store = StateStore(tmp_path / "state.db")
    store.write_behind(INSERT, ("gone", "1"))
    store.write_behind(INSERT, ("gone", "duplicate"))  # fails alone: primary key
    store.write_behind("DELETE FROM volumes WHERE name = ?", ("gone",))
    store.write_behind(INSERT, ("kept", "2"))
    await store.write(INSERT, ("awaited", "3"))  # answered only after everything queued before it
    assert dict(store.query("SELECT name, record FROM volumes")) == {"kept": "2", "awaited": "3"}
    store.write_behind(INSERT, ("last", "4"))
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    assert dict(reopened.query("SELECT name, record FROM volumes")) == {"kept": "2", "awaited": "3", "last": "4"}
    reopened.close()


async def test_a_write_behind_commits_on_its_own_soon_after(tmp_path: Path) -> None:
    """Nobody awaits it and nothing else is written: it still reaches the database within moments."""
    store = StateStore(tmp_path / "state.db")
    store.write_behind(INSERT, ("alone", "1"))
    reader = StateStore(tmp_path / "state.db")  # another connection sees only what is committed
    for _ in range(100):
        if reader.query("SELECT record FROM volumes WHERE name = 'alone'"):
            break
        await asyncio.sleep(0.01)
    assert reader.query("SELECT record FROM volumes WHERE name = 'alone'") == [("1",)]
    reader.close()
    store.close()


async def test_a_dead_writer_thread_is_replaced_and_reported_by_its_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread dying (here: a checkpoint raising what it does not expect) would leave every
    later write waiting forever; the supervised `watch_writer` starts another thread and raises, so
    the death is logged, counted and in /healthz."""
    store = StateStore(tmp_path / "state.db")
    await store.write("CREATE TABLE t (x INTEGER)")
    real = store._checkpoint
    broken = [True]

    def checkpoint() -> None:
        if broken.pop() if broken else False:
            raise RuntimeError("checkpoint exploded")
        real()

    monkeypatch.setattr(store, "_checkpoint", checkpoint)
    store._uncheckpointed = CHECKPOINT_EVERY
    await store.write("INSERT INTO t VALUES (1)")  # committed, then the thread dies
    supervisor = Supervisor(initial=0.01, maximum=0.01, stable_after=10)
    supervisor.start("state writer", lambda: store.watch_writer(interval=0.01))
    try:
        await until(lambda: supervisor.tasks["state writer"].failures == 1)
        assert "state writer thread died (RuntimeError: checkpoint exploded)" in supervisor.problems()[0]
        await asyncio.wait_for(store.write("INSERT INTO t VALUES (2)"), 5)
        assert store.query("SELECT x FROM t ORDER BY x") == [(1,), (2,)]
    finally:
        await supervisor.stop()
        store.close()
