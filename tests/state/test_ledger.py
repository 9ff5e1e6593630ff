from __future__ import annotations

from pathlib import Path

from fixeduser.state.ledger import ContainerLedger, ContainerRecord
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
