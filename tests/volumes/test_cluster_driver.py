"""Two hosts' driver cores on one PostgreSQL and one storage (in memory): one record per volume, "in use" across
hosts, one top-folder owner whatever each host mounts. tests/e2e/test_two_hosts.py runs the same with dockerds."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fixeduser.state.cluster_database import Cluster
from fixeduser.volumes.driver import DriverError
from tests.policy.postgres import Postgres

from .memory import MemoryBackend
from .test_driver_core import ALICE, BOB, Core

Hosts = tuple[Core, Core]


@pytest.fixture
async def hosts(tmp_path: Path, postgres: Postgres) -> AsyncIterator[Hosts]:
    url = postgres.create_database(f"d{secrets.token_hex(4)}")
    storage = MemoryBackend()
    made: list[Core] = []
    for name in ("host-a", "host-b"):
        cluster = Cluster(url, name, lock_timeout=2.0)
        await cluster.open()
        backend = MemoryBackend(volumes=storage.volumes)  # one storage, each host its own views
        made.append(Core(tmp_path / name, cluster=cluster, backend=backend))
        await cluster.renew(made[-1].driver.registry.all_mounts)
    try:
        yield made[0], made[1]
    finally:
        for core in made:
            assert core.driver.registry.cluster is not None
            await core.driver.registry.cluster.close()
            core.store.close()


async def test_a_pinned_volume_made_on_one_host_mounts_with_its_pin_on_the_other(hosts: Hosts) -> None:
    """B has never heard of eng-p when the daemon asks: it reads the record, and bob's mount is the pin's."""
    a, b = hosts
    await a.volume("eng-p", user="10001", group="10000")
    assert "eng-p" not in b.driver.registry  # no NOTIFY listener in this test: B reads the record on demand
    # An authz side that decided before the record reached B claims bob's own identity: refused, never bob's view.
    with pytest.raises(DriverError, match=r"eng-p is pinned to .*10001:10000.*authorized as .*10002:10000"):
        await b.mount("eng-p", "m0", owner="bob", identity=BOB)
    path = await b.mount("eng-p", "m1", owner="bob", identity=ALICE)
    assert path == "/memory/10001:10000/eng-p"
    assert b.driver.get("eng-p")["Status"]["identity"].startswith("pinned to")
    assert [v["Name"] for v in b.driver.list()] == ["eng-p"]


async def test_a_second_create_on_another_host_changes_nothing(hosts: Hosts) -> None:
    """The daemon on B creating a name A created keeps A's record: creator, pin, mode; no second folder."""
    a, b = hosts
    await a.volume("eng-v", mode="0750")
    await b.volume("eng-v", creator="bob", mode="0777")
    assert b.driver.registry.get("eng-v") == a.driver.registry.get("eng-v")
    assert b.driver.registry.get("eng-v").creator == "alice"  # type: ignore[union-attr]
    assert b.backend.volumes["eng-v"].mode == 0o750


async def test_remove_is_refused_while_another_host_mounts_the_volume(hosts: Hosts) -> None:
    """A purging remove on A while B's container holds the volume: refused, naming B; once B unmounts, it goes."""
    a, b = hosts
    await a.volume("eng-r", purge="true")
    await b.mount("eng-r", "m1", owner="alice", identity=ALICE)
    a.gate.grant("rm", kind="remove", volume="eng-r", subject="alice", options={})
    with pytest.raises(DriverError, match=r"in use by 1 container mount\(s\) on host\(s\) host-b"):
        await a.driver.remove("eng-r")
    assert "eng-r" in a.backend.volumes  # nothing purged
    await b.driver.unmount("eng-r", "m1")
    await a.driver.remove("eng-r")
    assert "eng-r" not in a.backend.volumes and "eng-r" not in a.driver.registry
    assert "eng-r" in b.driver.registry  # B did not listen: its cache is behind, until it mounts
    with pytest.raises(DriverError, match="eng-r was removed while it was being mounted"):
        await b.mount("eng-r", "m2", owner="alice", identity=ALICE)
    assert "eng-r" not in b.driver.registry and b.counts_of_all() == 0


async def test_one_hosts_unmount_does_not_undo_another_hosts_image_copy(hosts: Hosts) -> None:
    """A's create lends the empty top folder to bob for the image copy; B's unrelated unmount must not restore it
    under A's copy; A's own unmount does."""
    a, b = hosts
    await a.volume("eng-c", mode="0750")
    await a.mount("eng-c", "copy", owner="bob", identity=BOB, for_create=True)
    assert a.backend.volumes["eng-c"].owner == BOB
    await b.mount("eng-c", "other", owner="alice", identity=ALICE)
    await b.driver.unmount("eng-c", "other")
    assert a.backend.volumes["eng-c"].owner == BOB  # still lent: A's copy is running
    await a.driver.unmount("eng-c", "copy")
    assert (a.backend.volumes["eng-c"].owner, a.backend.volumes["eng-c"].mode) == (ALICE, 0o750)
