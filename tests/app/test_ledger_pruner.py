"""The ledger pruner: removals asked within one delay share one listing of the daemon's containers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fixeduser.app.serve import LedgerPruner
from fixeduser.docker_api.daemon import DaemonError
from fixeduser.state.ledger import ContainerLedger, ContainerRecord
from fixeduser.state.store import StateStore
from tests.waiting import until

KEPT, REMOVED, ALSO_REMOVED = "a" * 64, "b" * 64, "c" * 64


class ListingDaemon:
    """Answers `container_ids` with what it has (or fails, when told to), counting the listings."""

    def __init__(self, existing: set[str], *, fails: bool = False) -> None:
        self.existing = existing
        self.fails = fails
        self.listings = 0
        self.answer = asyncio.Event()  # cleared: a listing taken now is answered only once it is set
        self.answer.set()

    async def container_ids(self) -> set[str]:
        self.listings += 1
        if self.fails:
            raise DaemonError("the daemon does not answer")
        listed = set(self.existing)  # the daemon lists what exists now, and answers later
        await self.answer.wait()
        return listed


async def _ledger(tmp_path: Path) -> ContainerLedger:
    ledger = ContainerLedger(StateStore(tmp_path / "state.db"))
    for cid in (KEPT, REMOVED, ALSO_REMOVED):
        await ledger.record(ContainerRecord(id=cid, name="", owner="alice"))
    return ledger


async def test_removals_within_the_delay_share_one_listing(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    daemon = ListingDaemon({KEPT})
    pruner = LedgerPruner(ledger, daemon, delay=0.2)  # type: ignore[arg-type]
    for _ in range(5):  # five `docker run --rm` ending close together
        pruner.soon()
        await asyncio.sleep(0)
    assert daemon.listings == 0, "the listing waits for the delay, so the removals that follow share it"
    await until(lambda: ledger.ids() == {KEPT}, "the removed containers to be forgotten")
    await asyncio.sleep(0.3)  # past a second delay: no removal was asked since, so nothing more is listed
    assert daemon.listings == 1


async def test_a_removal_after_the_listing_gets_a_listing_of_its_own(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    daemon = ListingDaemon({KEPT, ALSO_REMOVED})
    pruner = LedgerPruner(ledger, daemon, delay=0.05)  # type: ignore[arg-type]
    pruner.soon()
    await until(lambda: REMOVED not in ledger.ids(), "the first removal to be pruned")
    daemon.existing = {KEPT}
    pruner.soon()
    await until(lambda: ledger.ids() == {KEPT}, "the second removal to be pruned")
    assert daemon.listings == 2


async def test_a_removal_asked_while_a_listing_runs_gets_the_next_listing(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    daemon = ListingDaemon({KEPT, ALSO_REMOVED})
    daemon.answer.clear()
    pruner = LedgerPruner(ledger, daemon, delay=0.05)  # type: ignore[arg-type]
    pruner.soon()
    await until(lambda: daemon.listings == 1, "the first listing to be taken")
    daemon.existing = {KEPT}  # removed after the listing was taken, and its removal reported meanwhile
    pruner.soon()
    daemon.answer.set()
    await until(lambda: ledger.ids() == {KEPT}, "the removal reported during the listing to be pruned")
    assert daemon.listings == 2


async def test_a_daemon_that_does_not_answer_keeps_every_record(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    daemon = ListingDaemon(set(), fails=True)
    pruner = LedgerPruner(ledger, daemon, delay=0.0)  # type: ignore[arg-type]
    assert await pruner.prune() == 0
    assert daemon.listings == 1
    assert ledger.ids() == {KEPT, REMOVED, ALSO_REMOVED}
