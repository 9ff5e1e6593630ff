"""The recovery starts, as their owners, the restart-policy containers whose mount was refused, retrying a few
times with growing pauses, and starts nothing the daemon does not show as refused by fixeduser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fixeduser.docker_api.daemon import DaemonError, ListedContainer
from fixeduser.state.ledger import ContainerLedger, ContainerRecord
from fixeduser.state.store import StateStore
from fixeduser.volumes.recovery import Recovery
from fixeduser.volumes.resolve import RECOVERY_PROMISE
from tests.waiting import until

REFUSED = "a" * 64
PLAIN = "b" * 64


@dataclass
class StoppedContainers:
    """The daemon: two stopped containers on volume v, one whose last start fixeduser refused; starts fail
    `failures` times first."""

    failures: int = 0
    starts: list[str] = field(default_factory=list)

    async def containers_using(self, volume: str, *, states: tuple[str, ...] = ()) -> list[ListedContainer]:
        return [ListedContainer.model_validate({"Id": cid, "State": "exited"}) for cid in (REFUSED, PLAIN)]

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        error = (
            f"error while mounting volume: VolumeDriver.Mount: ...; {RECOVERY_PROMISE}" if reference == REFUSED else ""
        )
        return {"Id": reference, "State": {"Status": "exited", "Error": error},
                "HostConfig": {"RestartPolicy": {"Name": "always"}}}  # fmt: skip

    async def start_container(self, container_id: str) -> None:
        self.starts.append(container_id)
        if len(self.starts) <= self.failures:
            raise DaemonError("daemon answered 500 to the start")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[ContainerLedger]:
    store = StateStore(tmp_path / "state.db")
    made = ContainerLedger(store)
    try:
        yield made
    finally:
        store.close()


async def test_a_failed_recovery_is_retried_until_it_starts(ledger: ContainerLedger) -> None:
    """A refusal schedules a pass; a start that fails schedules the next pass; the refused container starts
    on the second try, and the one fixeduser never refused is left alone."""
    await ledger.record(ContainerRecord(id=REFUSED, name="web", owner="alice"))
    await ledger.record(ContainerRecord(id=PLAIN, name="db", owner="bob"))
    daemon = StoppedContainers(failures=1)
    recovery = Recovery(daemon=daemon, ledger=ledger, volumes=lambda: ["v"], delay=0.01)
    recovery._everything = False
    recovery.mount_refused("v")
    await until(lambda: len(daemon.starts) == 2, "a retried start", within=5)
    assert daemon.starts == [REFUSED, REFUSED]


async def test_recovery_gives_up_after_its_attempts(ledger: ContainerLedger) -> None:
    """A start that keeps failing is tried `attempts` times, then left."""
    await ledger.record(ContainerRecord(id=REFUSED, name="web", owner="alice"))
    daemon = StoppedContainers(failures=99)
    recovery = Recovery(daemon=daemon, ledger=ledger, volumes=lambda: ["v"], delay=0.001, attempts=3)
    await recovery.run_pass()
    await until(lambda: len(daemon.starts) == 3, "three tries", within=5)
    assert await recovery.run_pass() == 0 and daemon.starts == [REFUSED] * 3
