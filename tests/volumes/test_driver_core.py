"""The driver core on a storage backend in memory (no root, no FUSE): permits, counts by mount ID, attribution,
the image-copy lend, removal and rollback. tests/volumes/test_driver.py runs the same core on real bindfs views."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.policy.identity import Identity
from fixeduser.policy.store import load_policy
from fixeduser.state.cluster_database import Cluster
from fixeduser.state.handoff import MountGate
from fixeduser.state.ledger import ContainerLedger, ContainerRecord
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.store import StateStore
from fixeduser.volumes.driver import DriverError, VolumeDriver
from fixeduser.volumes.resolve import MountIdentityResolver

from .memory import MemoryBackend, Restarting, StoredVolume

POLICY = load_policy(Path(__file__).resolve().parents[2] / "policies")
ALICE = Identity(uid=10001, gid=10000, user="10001", group="10000")
BOB = Identity(uid=10002, gid=10000, user="10002", group="10000")


class Core:
    """Gate, ledger, registry, resolver and driver on one state file, storage in memory."""

    def __init__(self, base: Path, *, cluster: Cluster | None = None, backend: MemoryBackend | None = None) -> None:
        self.store = StateStore(base / "state.db")
        self.gate = MountGate(wait_seconds=0.2)
        self.ledger = ContainerLedger(self.store)
        self.backend = backend or MemoryBackend()
        self.restarting = Restarting()
        resolver = MountIdentityResolver(gate=self.gate, ledger=self.ledger, policy=lambda: POLICY,
                                         daemon=self.restarting)  # fmt: skip
        self.driver = VolumeDriver(backend=self.backend, registry=VolumeRegistry(self.store, cluster),
                                   gate=self.gate,
                                   resolver=resolver, policy=lambda: POLICY, view_idle_seconds=0)  # fmt: skip

    async def volume(self, name: str, creator: str = "alice", **options: str) -> None:
        self.gate.grant(f"create-{name}", kind="create", volume=name, subject=creator, options=options)
        await self.driver.create(name, options)

    async def mount(self, name: str, mount_id: str, *, owner: str, identity: Identity, for_create: bool = False) -> str:
        key = f"start-{mount_id}"
        await self.gate.claim(key, container="c" * 64, owner=owner, volumes={name: identity}, for_create=for_create)
        try:
            return await self.driver.mount(name, mount_id)
        finally:
            await self.gate.release(key)

    def counts_of_all(self) -> int:
        return len(self.driver.registry.all_mounts())

    def counts(self, name: str) -> dict[str, int]:
        return dict(self.driver.get(name)["Status"]["mounts"])


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    made = Core(tmp_path)
    try:
        yield made
    finally:
        made.store.close()


async def test_create_needs_a_permit_and_gives_the_creator_the_top_folder(core: Core) -> None:
    """Only a create the authz side allowed happens; the top folder belongs to the creator's identity."""
    with pytest.raises(DriverError, match="not created by an authorized request"):
        await core.driver.create("eng-x", {})
    await core.volume("eng-x", mode="0750")
    assert core.backend.volumes["eng-x"].owner == ALICE and core.backend.volumes["eng-x"].mode == 0o750
    await core.driver.create("eng-x", {})  # the daemon creates again what exists: nothing happens
    assert list(core.backend.volumes) == ["eng-x"]


async def test_mounts_are_counted_by_id_and_views_follow_them(core: Core) -> None:
    """The same mount ID twice is one mount; each identity's view is up while any of its mounts is."""
    await core.volume("eng-v")
    path = await core.mount("eng-v", "m1", owner="alice", identity=ALICE)
    assert path == "/memory/10001:10000/eng-v"
    assert await core.mount("eng-v", "m1", owner="alice", identity=ALICE) == path
    await core.mount("eng-v", "m2", owner="bob", identity=BOB)
    assert core.counts("eng-v") == {"10001:10000": 1, "10002:10000": 1}
    assert core.backend.views == {"10001:10000", "10002:10000"}
    await core.driver.unmount("eng-v", "m1")
    await core.driver.unmount("eng-v", "m1")  # a repeated Unmount changes nothing
    assert core.counts("eng-v") == {"10002:10000": 1} and core.backend.views == {"10002:10000"}


async def test_attribution_follows_claims_and_restarting_containers(core: Core) -> None:
    """No evidence: refused; a restarting container of a known owner: its identity; of an unknown owner or two
    identities at once: refused, claim or not."""
    await core.volume("eng-v")
    with pytest.raises(DriverError, match="no authorized start"):
        await core.driver.mount("eng-v", "m")
    await core.ledger.record(ContainerRecord(id="b" * 64, name="db", owner="bob"))
    core.restarting.containers["eng-v"] = ["b" * 64]
    assert await core.driver.mount("eng-v", "m") == "/memory/10002:10000/eng-v"
    core.restarting.containers["eng-v"] = ["b" * 64, "d" * 64]
    with pytest.raises(DriverError, match="not created through fixeduser"):
        await core.driver.mount("eng-v", "m2")
    core.restarting.containers["eng-v"] = ["b" * 64]
    with pytest.raises(DriverError, match="different identities at once"):
        await core.mount("eng-v", "m3", owner="alice", identity=ALICE)
    assert core.counts("eng-v") == {"10002:10000": 1}


async def test_image_copy_borrows_the_empty_top_folder_and_gives_it_back(core: Core) -> None:
    """A create's mount lends the empty top folder to the copying identity; its Unmount returns it."""
    await core.volume("eng-v", mode="0750")
    await core.mount("eng-v", "copy", owner="bob", identity=BOB, for_create=True)
    assert core.backend.volumes["eng-v"].owner == BOB
    await core.driver.unmount("eng-v", "copy")
    assert core.backend.volumes["eng-v"].owner == ALICE and core.backend.volumes["eng-v"].mode == 0o750


async def test_a_failed_mount_rolls_back_and_removal_waits_for_mounts(core: Core) -> None:
    """A view that cannot be mounted leaves no count; a volume in use is not removed, and is once unused."""
    await core.volume("eng-v")
    core.backend.fail.add("mount_identity")
    with pytest.raises(DriverError, match="injected"):
        await core.mount("eng-v", "m", owner="alice", identity=ALICE)
    assert core.counts("eng-v") == {} and core.backend.views == set()
    core.backend.fail.clear()
    await core.mount("eng-v", "m", owner="alice", identity=ALICE)
    core.gate.grant("rm", kind="remove", volume="eng-v", subject="alice", options={})
    with pytest.raises(DriverError, match="in use by 1 container mount"):
        await core.driver.remove("eng-v")
    await core.driver.unmount("eng-v", "m")
    await core.driver.remove("eng-v")
    assert core.driver.list() == []


async def test_concurrent_mounts_of_two_identities_keep_exact_counts(core: Core) -> None:
    """Many concurrent mounts and unmounts of two identities end with exact counts and no view left."""
    await core.volume("eng-a")
    await core.volume("eng-b", creator="bob")
    jobs = [("eng-a", f"a{i}", "alice", ALICE) for i in range(20)] + [("eng-b", f"b{i}", "bob", BOB) for i in range(20)]
    await asyncio.gather(*(core.mount(v, m, owner=o, identity=i) for v, m, o, i in jobs))
    assert core.counts("eng-a") == {"10001:10000": 20} and core.counts("eng-b") == {"10002:10000": 20}
    await asyncio.gather(*(core.driver.unmount(v, m) for v, m, _, _ in jobs))
    assert core.counts("eng-a") == {} and core.counts("eng-b") == {} and core.backend.views == set()


async def test_an_adopted_volume_keeps_its_top_folder(core: Core) -> None:
    """Storage the backend found rather than made (marked `adopted` in the stored options) is never chowned or
    chmodded: not lent for an image copy, not restored at unmount, also after a plugin restart."""
    core.backend.volumes["eng-old"] = StoredVolume(owner=BOB, mode=0o700)  # there before fixeduser
    await core.volume("eng-old")
    assert core.driver.registry.get("eng-old").adopted  # type: ignore[union-attr]
    core.gate.grant("again", kind="create", volume="eng-new", subject="alice", options={})
    with pytest.raises(DriverError, match="unknown fixeduser volume option"):
        await core.driver.create("eng-new", {"adopted": "true"})  # a user cannot claim a volume was found
    await core.mount("eng-old", "copy", owner="alice", identity=ALICE, for_create=True)
    await core.driver.unmount("eng-old", "copy")
    assert (core.backend.volumes["eng-old"].owner, core.backend.volumes["eng-old"].mode) == (BOB, 0o700)


async def test_a_start_while_no_create_is_in_flight_gets_the_top_folder_back(core: Core) -> None:
    """alice's start mounted while her own create was in flight carries the copy mark as long as it runs; the
    create's copy chmods the top folder (as the daemon does) and its Unmount cannot restore it. bob's start, once
    no create is in flight, gets the folder back to its owner and mode before his view is used."""
    await core.volume("eng-v", mode="0770")
    key = "create-alice"
    await core.gate.claim(key, container="web", owner="alice", volumes={"eng-v": ALICE}, for_create=True)
    await core.driver.mount("eng-v", "copy")  # the create's copy mount: the folder is lent
    await core.driver.mount("eng-v", "alice-start")  # another container of alice's starts meanwhile
    assert {m.mount_id: m.copy_up for m in core.driver.registry.all_mounts()} == {"copy": True, "alice-start": True}
    core.backend.volumes["eng-v"].mode = 0o755  # the daemon's copy gives the folder the image folder's mode
    await core.driver.unmount("eng-v", "copy")
    assert core.backend.volumes["eng-v"].mode == 0o755  # alice's start still carries the mark
    await core.gate.release(key)
    await core.mount("eng-v", "bob-start", owner="bob", identity=BOB)
    assert (core.backend.volumes["eng-v"].owner, core.backend.volumes["eng-v"].mode) == (ALICE, 0o770)
    assert not any(m.copy_up for m in core.driver.registry.all_mounts())
