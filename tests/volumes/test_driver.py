"""VolumeDriver: exact reference counts under concurrency, rollback, restarts, stale-record pruning, removal."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fixeduser.handoff import MountGate
from fixeduser.identity import Identity
from fixeduser.state import StateStore
from fixeduser.volumes.backends.base import BackendError
from fixeduser.volumes.driver import DriverError, VolumeDriver
from fixeduser.volumes.registry import MountRecord, VolumeRecord, VolumeRegistry, current_boot_id
from fixeduser.volumes.resolve import MountPlan

ALICE = Identity(uid=10001, gid=10000, user="10001", group="10000")
BOB = Identity(uid=10002, gid=10000, user="10002", group="10000")
PIN_ALICE = {"user": "10001", "group": "10000"}


class FakeBackend:
    """In-memory backend that counts mounted views and can be told to fail."""

    name = "local"
    scope = "local"

    def __init__(self) -> None:
        self.views: set[str] = set()
        self.volumes: dict[str, dict[str, Any]] = {}
        self.fail: set[str] = set()
        self.mount_calls = 0

    async def _step(self, operation: str) -> None:
        await asyncio.sleep(random.random() / 1000)  # let other tasks interleave
        if operation in self.fail:
            raise BackendError(f"{operation} failed (injected)")

    async def check(self) -> None:
        await self._step("check")

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        await self._step("create_volume")
        self.volumes.setdefault(volume, {"owner": owner, "mode": mode})

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        await self._step("remove_volume")
        if purge:
            self.volumes.pop(volume, None)

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        await self._step("set_top_folder")
        return True

    async def volume_exists(self, volume: str) -> bool:
        return volume in self.volumes

    async def mount_identity(self, identity: Identity) -> Path:
        self.mount_calls += 1
        await self._step("mount_identity")
        self.views.add(identity.key)
        return Path("/views") / identity.key

    def volume_path(self, identity: Identity, volume: str) -> Path:
        return Path("/views") / identity.key / volume

    async def unmount_identity(self, identity: Identity) -> None:
        await self._step("unmount_identity")
        self.views.discard(identity.key)

    async def mounted_identities(self) -> list[str]:
        return sorted(self.views)

    async def close(self) -> None:
        pass


class FixedResolver:
    """Resolves each volume to a configured identity (the hand-off is tested elsewhere)."""

    def __init__(self) -> None:
        self.identities: dict[str, Identity] = {}
        self.containers: dict[str, tuple[str, ...]] = {}
        self.copy_up = False

    async def plan_for(self, volume: VolumeRecord) -> MountPlan:
        await asyncio.sleep(0)
        return MountPlan(
            identity=self.identities[volume.name],
            copy_up=self.copy_up,
            containers=self.containers.get(volume.name, ()),
        )


class FakeDaemon:
    def __init__(self) -> None:
        self.states: dict[str, dict[str, str]] = {}  # volume -> container id -> state
        self.finished: dict[str, str] = {}
        self.down = False

    async def container_states(self, volume: str) -> dict[str, str]:
        from fixeduser.daemon import DaemonError  # noqa: PLC0415

        if self.down:
            raise DaemonError("daemon down")
        return dict(self.states.get(volume, {}))

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        if not any(reference in s for s in self.states.values()):
            return None
        return {"State": {"FinishedAt": self.finished.get(reference, "0001-01-01T00:00:00Z")}}


class Rig:
    def __init__(self, path: Path, backend: Any = None) -> None:
        self.path = path
        self.backend = backend or FakeBackend()
        self.gate = MountGate()
        self.resolver = FixedResolver()
        self.daemon = FakeDaemon()
        self.store: StateStore | None = None
        self.driver = self.restart()

    def restart(self, *, purge_default: bool = False, view_idle_seconds: float = 0) -> VolumeDriver:
        """A new driver on the same state file: what a restarted plugin process sees."""
        if self.store is not None:
            self.store.close()
        self.store = StateStore(self.path / "state.db")
        self.driver = VolumeDriver(
            backend=self.backend,
            registry=VolumeRegistry(self.store),
            gate=self.gate,
            resolver=self.resolver,  # type: ignore[arg-type]
            policy=lambda: None,  # type: ignore[arg-type,return-value]
            purge_default=purge_default,
            daemon=self.daemon,
            view_idle_seconds=view_idle_seconds,
        )
        return self.driver

    async def volume(self, name: str, identity: Identity = ALICE, **options: str) -> None:
        self.gate.grant(f"k-{name}", kind="create", volume=name, subject="alice", options={})
        await self.driver.create(name, {**PIN_ALICE, **options})
        self.resolver.identities[name] = identity

    def counts(self, name: str) -> dict[str, int]:
        return dict(self.driver.get(name)["Status"]["mounts"])


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    assert r.store is not None
    r.store.close()


async def test_concurrent_mounts_and_unmounts_keep_counts_exact(rig: Rig) -> None:
    """200 mount IDs over 4 volumes and 2 identities, each mounted twice and unmounted twice, all at once."""
    for index, name in enumerate(["v0", "v1", "v2", "v3"]):
        await rig.volume(name, ALICE if index % 2 == 0 else BOB)
    ids = [(f"m{i}", f"v{i % 4}") for i in range(200)]

    async def life(mount_id: str, volume: str) -> str:
        first, again = await asyncio.gather(rig.driver.mount(volume, mount_id), rig.driver.mount(volume, mount_id))
        assert first == again
        return first

    await asyncio.gather(*(life(m, v) for m, v in ids))
    assert rig.counts("v0") == {"10001:10000": 50} and rig.counts("v1") == {"10002:10000": 50}
    assert rig.backend.views == {"10001:10000", "10002:10000"}
    random.shuffle(ids)
    await asyncio.gather(*(rig.driver.unmount(v, m) for m, v in ids), *(rig.driver.unmount(v, m) for m, v in ids[:50]))
    assert all(rig.counts(f"v{i}") == {} for i in range(4))
    assert rig.backend.views == set()


async def test_interleaved_mount_and_unmount_of_one_identity_never_loses_the_view(rig: Rig) -> None:
    """While one container unmounts and another mounts the same identity, the view stays up for the mounter."""
    await rig.volume("v")
    for round_ in range(50):
        await rig.driver.mount("v", f"a{round_}")
        await asyncio.gather(rig.driver.unmount("v", f"a{round_}"), rig.driver.mount("v", f"b{round_}"))
        assert rig.backend.views == {"10001:10000"}, round_
        await rig.driver.unmount("v", f"b{round_}")
        assert rig.backend.views == set()


async def test_failed_mount_leaves_no_record_and_no_view(rig: Rig) -> None:
    """A backend failure half way through a mount rolls back the record; a later mount works."""
    await rig.volume("v")
    rig.backend.fail.add("mount_identity")
    with pytest.raises(DriverError, match="injected"):
        await rig.driver.mount("v", "m1")
    assert rig.counts("v") == {} and rig.backend.views == set()
    assert rig.restart().registry.all_mounts() == []  # nothing persisted either
    rig.backend.fail.clear()
    await rig.driver.mount("v", "m1")
    assert rig.counts("v") == {"10001:10000": 1}


async def test_failed_copy_up_mount_rolls_back(rig: Rig) -> None:
    """If lending the top folder for an image copy fails, the mount is not counted and its view is not left."""
    await rig.volume("v")
    await rig.driver.mount("v", "other")  # another user of the same identity keeps the view up
    rig.resolver.copy_up = True
    rig.backend.fail.add("set_top_folder")
    with pytest.raises(DriverError):
        await rig.driver.mount("v", "copy")
    assert rig.counts("v") == {"10001:10000": 1} and rig.backend.views == {"10001:10000"}


async def test_cancelled_mount_rolls_back(rig: Rig) -> None:
    """A Mount cancelled mid-way (the daemon hung up) leaves no record behind."""
    await rig.volume("v")
    gate = asyncio.Event()
    original = rig.backend.mount_identity

    async def slow(identity: Identity) -> Path:
        await gate.wait()
        return await original(identity)

    rig.backend.mount_identity = slow
    task = asyncio.create_task(rig.driver.mount("v", "m1"))
    await asyncio.sleep(0.01)
    assert rig.counts("v") == {"10001:10000": 1}  # write-ahead record while the view is mounted
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert rig.counts("v") == {}


async def test_mounts_survive_a_plugin_restart_and_later_unmounts_count(rig: Rig) -> None:
    """Volumes, pins and mount records come back after a restart; the Unmounts that follow are honoured."""
    await rig.volume("v", mode="0700")
    for i in range(3):
        await rig.driver.mount("v", f"m{i}")
    driver = rig.restart()
    info = driver.get("v")
    assert info["Status"]["mounts"] == {"10001:10000": 3}
    assert info["Status"]["identity"] == "pinned to 10001:10000" and info["Status"]["mode"] == "0700"
    await driver.reconcile()
    assert rig.backend.views == {"10001:10000"}  # in use: kept
    for i in range(3):
        await driver.unmount("v", f"m{i}")
    assert rig.counts("v") == {} and rig.backend.views == set()
    assert rig.restart().registry.all_mounts() == []


async def test_reconcile_after_reboot_drops_records_and_remounts_what_is_in_use(rig: Rig) -> None:
    """Records of an earlier boot go; a recorded view that is missing is mounted again; idle views go."""
    await rig.volume("v")
    await rig.volume("w", BOB)
    await rig.driver.mount("v", "current")
    old = MountRecord(mount_id="old", volume="w", identity=BOB, boot_id="another-boot", mounted_at=1.0)
    await rig.driver.registry.add_mount(old)
    rig.backend.views = {"99:99"}  # a view left by a crash; the recorded one is gone (unmounted by hand)
    await rig.restart().reconcile()
    assert [m.mount_id for m in rig.driver.registry.all_mounts()] == ["current"]
    assert rig.backend.views == {"10001:10000"}
    assert current_boot_id()  # the machine has one, so the test above meant something


def _daemon_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e9):09d}Z"


async def test_pruning_drops_only_what_the_daemon_shows_to_be_over(rig: Rig) -> None:
    """Gone, stopped or since-restarted containers lose their records; running, young or doubtful ones stay."""
    await rig.volume("v")
    now = time.time()
    cases = {
        "gone": ("c-gone", None, None),
        "exited": ("c-exited", "exited", None),
        "restarted": ("c-restarted", "running", now - 30),  # finished after the mount (now - 60)
        "running": ("c-running", "running", now - 120),  # finished before the mount: holds it
    }
    for mount_id, (container, state, finished) in cases.items():
        rig.resolver.containers["v"] = (container,)
        await rig.driver.mount("v", mount_id)
        if state is not None:
            rig.daemon.states.setdefault("v", {})[container] = state
        if finished is not None:
            rig.daemon.finished[container] = _daemon_time(finished)
    for mount in rig.driver.registry.all_mounts():  # pretend they were mounted a minute ago
        await rig.driver.registry.add_mount(mount.model_copy(update={"mounted_at": now - 60}))
    await rig.driver.mount("v", "young")  # too young to judge
    rig.daemon.down = True
    assert await rig.driver.prune_stale_mounts(grace=10) == 0
    rig.daemon.down = False
    assert await rig.driver.prune_stale_mounts(grace=10) == 3
    assert sorted(m.mount_id for m in rig.driver.registry.all_mounts()) == ["running", "young"]


async def test_pruning_keeps_a_start_mount_made_while_another_create_was_in_flight(rig: Rig) -> None:
    """A mount flagged copy-up (some create was in flight) is kept while its own container runs."""
    await rig.volume("v")
    rig.resolver.copy_up = True
    rig.resolver.containers["v"] = ("other-being-created", "c-running")
    await rig.driver.mount("v", "m")
    await rig.driver.registry.add_mount(rig.driver.registry.all_mounts()[0].model_copy(update={"mounted_at": 1.0}))
    rig.daemon.states["v"] = {"c-running": "running"}
    assert await rig.driver.prune_stale_mounts(grace=10) == 0
    rig.daemon.states["v"] = {"c-running": "exited"}
    assert await rig.driver.prune_stale_mounts(grace=10) == 1


async def test_pruning_records_without_containers_needs_no_live_user(rig: Rig) -> None:
    """A record naming no container is only dropped when no container using the volume is live."""
    await rig.volume("v")
    await rig.driver.mount("v", "m")
    await rig.driver.registry.add_mount(rig.driver.registry.all_mounts()[0].model_copy(update={"mounted_at": 1.0}))
    rig.daemon.states["v"] = {"someone": "running"}
    assert await rig.driver.prune_stale_mounts(grace=10) == 0
    rig.daemon.states["v"] = {"someone": "exited"}
    assert await rig.driver.prune_stale_mounts(grace=10) == 1
    assert rig.backend.views == set()  # its view went with its last user


async def test_volume_in_use_cannot_be_removed(rig: Rig) -> None:
    """Remove is refused while a mount is recorded, even one in flight (write-ahead)."""
    await rig.volume("v")
    await rig.driver.mount("v", "m")
    rig.gate.grant("r", kind="remove", volume="v", subject="@local", options={})
    with pytest.raises(DriverError, match="in use by 1 container mount"):
        await rig.driver.remove("v")
    await rig.driver.unmount("v", "m")
    await rig.driver.remove("v")
    await rig.driver.remove("v")  # again: nothing to do, not an error
    assert "v" not in rig.driver.registry


async def test_remove_racing_a_mount_never_leaves_a_mount_of_a_removed_volume(rig: Rig) -> None:
    """Concurrent Mount and Remove: either the remove is refused or the mount fails; never both succeed."""
    for round_ in range(30):
        name = f"r{round_}"
        await rig.volume(name)
        rig.gate.grant(f"rm{round_}", kind="remove", volume=name, subject="@local", options={})
        results = await asyncio.gather(rig.driver.mount(name, "m"), rig.driver.remove(name), return_exceptions=True)
        mounted, removed = (not isinstance(r, BaseException) for r in results)
        assert mounted != removed, results
        assert (name in rig.driver.registry) == mounted


async def test_purge_is_an_explicit_choice(tmp_path: Path) -> None:
    """Data is kept by default; -o purge=true or the plugin default deletes it; -o purge=false wins over the default."""
    rig = Rig(tmp_path)
    for name, options in [("keep", {}), ("purge", {"purge": "true"})]:
        await rig.volume(name, **options)
    rig.driver = rig.restart(purge_default=True)
    await rig.volume("default")
    await rig.volume("explicit-keep", purge="false")
    for name in ["keep", "purge", "default", "explicit-keep"]:
        rig.gate.grant(name, kind="remove", volume=name, subject="@local", options={})
        await rig.driver.remove(name)
    assert sorted(rig.backend.volumes) == ["explicit-keep", "keep"]


async def test_get_and_list_answer_while_the_backend_is_down(rig: Rig) -> None:
    """After a daemon restart the daemon drops volumes whose Get fails: Get/List/Path never touch the backend."""
    await rig.volume("v", mode="0750")
    await rig.driver.mount("v", "m")
    rig.backend.fail.update({"check", "mount_identity", "create_volume", "set_top_folder"})
    driver = rig.restart()
    assert driver.get("v")["Status"]["mode"] == "0750"
    assert [v["Name"] for v in driver.list()] == ["v"]
    assert driver.path("v") == "/views/10001:10000/v"


async def test_concurrent_creates_make_one_volume(rig: Rig) -> None:
    """Repeated and concurrent Creates of one name create it once and keep the first record."""
    for key in range(5):
        rig.gate.grant(f"k{key}", kind="create", volume="v", subject="alice", options={})
    await asyncio.gather(*(rig.driver.create("v", {**PIN_ALICE, "mode": f"07{i}0"}) for i in range(5)))
    assert rig.driver.registry.names() == ["v"] and len(rig.backend.volumes) == 1


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="LocalBackend volume creation chowns: needs root")


@needs_root
async def test_purge_through_the_driver_never_follows_symlinks_into_another_volume(tmp_path: Path) -> None:
    """Purging a volume with a symlink to a sibling volume deletes the link, not the sibling's data."""
    from fixeduser.volumes.backends.local import LocalBackend  # noqa: PLC0415

    backend = LocalBackend(root=tmp_path / "data", mount_root=tmp_path / "mnt")
    rig = Rig(tmp_path, backend)
    await rig.volume("victim")
    await rig.volume("doomed", purge="true")
    (tmp_path / "data" / "victim" / "precious").write_text("keep me")
    (tmp_path / "data" / "doomed" / "junk").write_text("x")
    (tmp_path / "data" / "doomed" / "link").symlink_to(tmp_path / "data" / "victim")
    (tmp_path / "data" / "doomed" / "file-link").symlink_to(tmp_path / "data" / "victim" / "precious")
    rig.gate.grant("r", kind="remove", volume="doomed", subject="@local", options={})
    await rig.driver.remove("doomed")
    assert not (tmp_path / "data" / "doomed").exists()
    assert (tmp_path / "data" / "victim" / "precious").read_text() == "keep me"
    assert Counter(p.name for p in (tmp_path / "data").iterdir()) == Counter(["victim"])


async def test_quobyte_options_are_refused_by_the_local_backend(rig: Rig) -> None:
    """-o tenant/-o configuration only mean something to the quobyte backend: refused with the reason."""
    rig.gate.grant("k", kind="create", volume="v", subject="alice", options={})
    with pytest.raises(DriverError, match="only apply to the quobyte backend; this plugin runs the local backend"):
        await rig.driver.create("v", {**PIN_ALICE, "tenant": "t2"})
    assert "v" not in rig.driver.registry


async def test_idle_view_stays_mounted_for_the_grace_period(rig: Rig) -> None:
    """An unused view survives its grace period (docker run mounts twice), then goes; a new mount cancels that."""
    rig.restart(view_idle_seconds=0.2)
    await rig.volume("v")
    await rig.driver.mount("v", "create-time")
    await rig.driver.unmount("v", "create-time")
    assert rig.backend.views == {"10001:10000"}  # kept for the start that follows
    await rig.driver.mount("v", "start")
    await asyncio.sleep(0.3)
    assert rig.backend.views == {"10001:10000"}  # in use: the grace timer did not unmount it
    await rig.driver.unmount("v", "start")
    await asyncio.sleep(0.3)
    assert rig.backend.views == set()
