from __future__ import annotations

import asyncio
from pathlib import Path

from fixeduser.state.ledger import PRUNE_SLICE, ContainerLedger, ContainerRecord, OwnedRecord
from fixeduser.state.store import StateStore


def _record(cid: str) -> ContainerRecord:
    return ContainerRecord(id=cid, name=f"n{cid[:4]}", owner="alice", volumes=(), restart=False)


async def test_prune_forgets_only_containers_known_before_the_listing(tmp_path: Path) -> None:
    """Containers gone from the daemon are forgotten; one recorded after the listing was asked for is kept."""
    store = StateStore(tmp_path / "s.db")
    ledger = ContainerLedger(store)
    await ledger.record(_record("a" * 64))
    await ledger.record(_record("b" * 64))
    known = ledger.ids()
    existing = {"a" * 64}  # the daemon's answer: b was auto-removed
    await ledger.record(_record("c" * 64))  # created while the listing was in flight
    assert await ledger.keep_only(existing, among=known) == 1
    assert ledger.ids() == {"a" * 64, "c" * 64}
    store.close()  # a plugin stopping: every queued write is committed first
    assert ContainerLedger(StateStore(tmp_path / "s.db")).ids() == {"a" * 64, "c" * 64}  # persisted


def _cid(n: int) -> str:
    return f"{n:064x}"


async def test_a_removed_container_takes_exactly_its_exec_instances_along(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.db")
    ledger = ContainerLedger(store)
    for n in range(3):
        await ledger.record(_record(_cid(n)))
        for e in range(4):
            await ledger.execs.record(OwnedRecord(id=f"exec-{n}-{e}", name="", owner="alice", container=_cid(n)))
    # recorded again for another container (the daemon never does this, but the row is replaced): it moves
    await ledger.execs.record(OwnedRecord(id="exec-0-3", name="", owner="alice", container=_cid(2)))
    await ledger.forget(_cid(0))
    assert ledger.execs.find("exec-0-0") is None
    assert ledger.execs.find("exec-0-3") is not None, "the exec recorded for another container since stays"
    assert len(ledger.execs) == 9
    await ledger.forget(_cid(2))
    assert ledger.execs.find("exec-0-3") is None
    assert len(ledger.execs) == 4
    store.close()
    reopened = ContainerLedger(StateStore(tmp_path / "s.db"))
    assert reopened.ids() == {_cid(1)}
    assert {f"exec-1-{e}" for e in range(4)} == {r for r in (f"exec-{n}-{e}" for n in range(3) for e in range(4))
                                                  if reopened.execs.find(r) is not None}  # fmt: skip
    await reopened.forget(_cid(1))  # the index is rebuilt from the rows at start
    assert len(reopened.execs) == 0


async def test_a_large_prune_lets_the_event_loop_run_between_slices(tmp_path: Path) -> None:
    ledger = ContainerLedger(StateStore(tmp_path / "s.db"))
    total = 2 * PRUNE_SLICE + 1
    for n in range(total):
        await ledger.record(_record(_cid(n)))
    seen: list[int] = []

    async def a_decision_meanwhile() -> None:
        seen.append(len(ledger))

    known = ledger.ids()
    meanwhile = asyncio.create_task(a_decision_meanwhile())
    assert await ledger.keep_only(set(), among=known) == total
    await meanwhile
    assert seen and 0 < seen[0] < total, f"the other task ran at {seen}, not in the middle of the prune"
