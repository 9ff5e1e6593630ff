"""VolumeDriver against real parts: exact reference counts, rollback, restarts, stale-record pruning, removal.

Every test drives the real `LocalBackend` (bindfs views run as uid 10001/10002 over FUSE), the real
`MountIdentityResolver` on a real `MountGate` and `ContainerLedger`, one real `StateStore` file and
the repository's compiled policy (`policies/`). Identities reach the driver the way the authz plugin
hands them over: a claim on the gate for the duration of the Mount. Failures are injected by
`FaultyLocalBackend`, the real backend with a switch that makes a chosen call fail or wait before it
runs. The pruning tests ask a private, real dockerd (`fixeduser.sandbox.Dockerd`) through the real
`DaemonClient`; its containers use a docker volume of the same name as the fixeduser volume, which
is all the daemon's `volume` filter and `FinishedAt` look at.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from fixeduser.docker_api.daemon import DaemonClient
from fixeduser.linux.mounts import is_mount_point, is_stale
from fixeduser.policy.access import mount_identity
from fixeduser.policy.identity import Identity
from fixeduser.policy.store import load_policy
from fixeduser.sandbox import Dockerd, Engine, dockerd_available, unmount_all_under
from fixeduser.state.handoff import ClaimJournal, MountGate
from fixeduser.state.ledger import ContainerLedger, ContainerRecord
from fixeduser.state.records import MountRecord, current_boot_id
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.store import StateStore
from fixeduser.volumes.api import ANSWERED_AT_ONCE, volume_handlers
from fixeduser.volumes.backends import LocalBackend, prepare_host_for_fuse
from fixeduser.volumes.backends.base import BackendError
from fixeduser.volumes.driver import ContainerLookup, DriverError, VolumeDriver
from fixeduser.volumes.resolve import MountIdentityResolver
from tests.waiting import until, wait_until

from .memory import Restarting
from .processes import bindfs_pids

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "policies")  # alice -> 10001:10000, bob -> 10002:10000; role:eng mounts eng-*
ALICE = Identity(uid=10001, gid=10000, user="10001", group="10000")
BOB = Identity(uid=10002, gid=10000, user="10002", group="10000")
PIN_ALICE = {"user": "10001", "group": "10000"}
BACKEND_CALLS = (
    "check",
    "create_volume",
    "remove_volume",
    "set_top_folder",
    "volume_exists",
    "mount_identity",
    "unmount_identity",
    "mounted_identities",
)


@pytest.fixture(scope="module")
def fuse_host() -> None:
    """Root, bindfs and a FUSE setup usable by non-root daemons; host users for uids 10001/10002."""
    if os.geteuid() != 0:
        pytest.skip("real bindfs views need root")
    if shutil.which("bindfs") is None or shutil.which("setpriv") is None or not Path("/dev/fuse").exists():
        pytest.skip("needs bindfs, setpriv and /dev/fuse")
    prepare_host_for_fuse()
    for identity in (ALICE, BOB):
        if subprocess.run(["getent", "passwd", str(identity.uid)], check=False, capture_output=True).returncode:
            pytest.skip(f"uid {identity.uid} has no passwd entry (fusermount3 needs one)")


class FaultyLocalBackend(LocalBackend):
    """The real LocalBackend; a call named in `fail` raises before it runs, one in `paused` waits first."""

    def __init__(self, *, fail: set[str], root: Path, mount_root: Path) -> None:
        super().__init__(root=root, mount_root=mount_root)
        self.fail = fail
        self.paused: dict[str, asyncio.Event] = {}
        self.calls: Counter[str] = Counter()  # calls begun
        self.finished: Counter[str] = Counter()  # calls that returned

    async def _step(self, operation: str) -> None:
        self.calls[operation] += 1
        if (event := self.paused.get(operation)) is not None:
            await event.wait()
        if operation in self.fail:
            raise BackendError(f"{operation} failed (injected)")

    async def check(self) -> None:
        await self._step("check")
        await super().check()

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        await self._step("create_volume")
        await super().create_volume(volume, owner=owner, mode=mode, options=options)

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        await self._step("remove_volume")
        await super().remove_volume(volume, purge=purge, options=options)

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        await self._step("set_top_folder")
        return await super().set_top_folder(volume, owner=owner, mode=mode, only_if_empty=only_if_empty)

    async def volume_exists(self, volume: str) -> bool:
        await self._step("volume_exists")
        return await super().volume_exists(volume)

    async def mount_identity(self, identity: Identity) -> Path:
        await self._step("mount_identity")
        return await super().mount_identity(identity)

    async def unmount_identity(self, identity: Identity) -> None:
        await self._step("unmount_identity")
        await super().unmount_identity(identity)
        self.finished["unmount_identity"] += 1

    async def mounted_identities(self) -> list[str]:
        await self._step("mounted_identities")
        return await super().mounted_identities()


class Rig:
    """One plugin's volume side: backend, gate, ledger, resolver and driver on one state file."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.fail: set[str] = set()
        self.daemon: DaemonClient | None = None
        self.restarting = Restarting()
        self.store: StateStore | None = None
        self._keys = itertools.count()
        self.driver = self.restart()

    def restart(self, *, purge_default: bool = False, view_idle_seconds: float = 0) -> VolumeDriver:
        """A new driver on the same state file and storage: what a restarted plugin process sees.

        The gate is rebuilt with the claims its journal kept, as the authz side of a restarted
        process does; the mounted views stay, as they do for real.
        """
        if self.store is not None:
            self.store.close()
            assert self.gate.journal is not None
            self.gate.journal.close()
        self.store = StateStore(self.base / "state" / "state.db")
        self.gate = MountGate(journal=ClaimJournal(self.base / "state" / "claims.jsonl"))
        self.gate.restore()
        self.ledger = ContainerLedger(self.store)
        self.backend = FaultyLocalBackend(fail=self.fail, root=self.base / "data", mount_root=self.base / "mnt")
        self.resolver = MountIdentityResolver(
            gate=self.gate, ledger=self.ledger, policy=lambda: POLICY, daemon=self.daemon or self.restarting
        )
        self.driver = VolumeDriver(
            backend=self.backend,
            registry=VolumeRegistry(self.store),
            gate=self.gate,
            resolver=self.resolver,
            policy=lambda: POLICY,
            purge_default=purge_default,
            daemon=self.daemon,
            view_idle_seconds=view_idle_seconds,
        )
        return self.driver

    def key(self) -> str:
        return f"request-{next(self._keys)}"

    async def volume(self, name: str, *, creator: str = "alice", **options: str) -> None:
        """Create `name` as the authz plugin lets `creator` do it: a permit, then the driver's Create."""
        self.gate.grant(self.key(), kind="create", volume=name, subject=creator, options={})
        await self.driver.create(name, options)

    def identity_of(self, owner: str, name: str) -> Identity:
        """The identity the authz plugin claims for `owner`'s containers mounting `name`."""
        record = self.driver.registry.get(name)
        return mount_identity(POLICY, owner, name, record.pinned if record else None)

    async def mount(
        self, name: str, mount_id: str, *, owner: str = "alice", container: str = "", for_create: bool = False
    ) -> str:
        """A Mount during a request of `owner`'s that claimed `name` (a start names the container's ID)."""
        key = self.key()
        volumes = {name: self.identity_of(owner, name)}
        await self.gate.claim(key, container=container, owner=owner, volumes=volumes, for_create=for_create)
        try:
            return await self.driver.mount(name, mount_id)
        finally:
            await self.gate.release(key)

    def counts(self, name: str) -> dict[str, int]:
        return dict(self.driver.get(name)["Status"]["mounts"])

    async def views(self) -> list[str]:
        """Keys of the identity views mounted right now, as the kernel shows them."""
        return await LocalBackend(root=self.base / "data", mount_root=self.base / "mnt").mounted_identities()

    def write_through(self, identity: Identity, name: str, file: str) -> int:
        """Write a file through `identity`'s view of volume `name`; returns the file's owner uid."""
        path = self.backend.volume_path(identity, name) / file
        path.write_text(file)
        return (self.base / "data" / name / file).stat().st_uid

    def stored(self) -> list[str]:
        return sorted(p.name for p in (self.base / "data").iterdir())


@pytest.fixture
def base(fuse_host: None) -> Iterator[Path]:
    """A fresh traversable dir under /tmp (not pytest's 0700 tree); every mount below goes after."""
    path = Path(tempfile.mkdtemp(prefix="fxu-driver-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        still = unmount_all_under([path])
        if not still:
            shutil.rmtree(path, ignore_errors=True)
        assert not still, f"mounts left below {path}: {still}"


@pytest.fixture
def rig(base: Path) -> Iterator[Rig]:
    r = Rig(base)
    try:
        yield r
    finally:
        assert r.store is not None
        r.store.close()


# ------------------------------------------------------------------ a real daemon for pruning


class Containers:
    """Containers of the private dockerd that use a docker volume of a given name."""

    def __init__(self, dockerd: Dockerd, image: str) -> None:
        self.dockerd = dockerd
        self.image = image
        self.made: list[str] = []
        self.volumes: set[str] = set()

    def ok(self, *args: str) -> str:
        result = self.dockerd.docker(*args)
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}\n{self.dockerd.log_tail()}"
        return result.stdout.strip()

    def run(self, volume: str) -> str:
        """A running container with `volume` mounted; returns its ID."""
        return self._make("run", "-d", volume)

    def create(self, volume: str) -> str:
        """A created, never started container with `volume` mounted; returns its ID."""
        return self._make("create", None, volume)

    def _make(self, verb: str, flag: str | None, volume: str) -> str:
        self.volumes.add(volume)
        args = [
            verb,
            *([flag] if flag else []),
            "--network",
            "none",
            "-v",
            f"{volume}:/data",
            self.image,
            "sleep",
            "600",
        ]
        cid = self.ok(*args)
        self.made.append(cid)
        return cid

    def state(self, cid: str) -> str:
        return self.ok("inspect", "-f", "{{.State.Status}}", cid)

    def stop(self, cid: str) -> None:
        """Stop a container, and wait until the daemon's container list (what the pruner reads) says so: 26.1's
        list can still show it running for a moment after `docker stop` returned."""
        self.ok("stop", "-t", "0", cid)
        listed = ("ps", "-a", "--filter", f"id={cid}", "--format", "{{.State}}")
        wait_until(lambda: self.ok(*listed) == "exited", f"container {cid[:12]} to be listed as exited")

    def cleanup(self) -> None:
        if self.made:
            self.dockerd.docker("rm", "-f", *self.made)
        for volume in self.volumes:
            self.dockerd.docker("volume", "rm", "-f", volume)


@pytest.fixture(scope="module")
def dockerd(engine: Engine) -> Iterator[tuple[Dockerd, str]]:
    """A private dockerd on a unix socket only, with a busybox image."""
    if not dockerd_available():
        pytest.skip("needs root and dockerd, containerd, runc, docker")
    workdir = Path(tempfile.mkdtemp(prefix="fxu-drv-d-", dir="/tmp"))
    daemon = Dockerd(workdir, engine=engine)
    try:
        daemon.start()
        image = daemon.import_busybox()
        yield daemon, image
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def containers(dockerd: tuple[Dockerd, str]) -> AsyncIterator[Containers]:
    made = Containers(*dockerd)
    try:
        yield made
    finally:
        await asyncio.to_thread(made.cleanup)


@pytest.fixture
async def pruning_rig(rig: Rig, dockerd: tuple[Dockerd, str]) -> AsyncIterator[Rig]:
    """The rig with the real DaemonClient of the private dockerd as the driver's `daemon`."""
    client = DaemonClient(dockerd[0].host)
    lookup: ContainerLookup = client  # what the driver expects; DaemonClient has both look-ups
    assert callable(lookup.containers_using) and callable(lookup.inspect_container)
    rig.daemon = client
    rig.restart()
    try:
        yield rig
    finally:
        await client.close()


# ------------------------------------------------------------------ reference counts


async def test_concurrent_mounts_and_unmounts_keep_counts_exact(rig: Rig) -> None:
    """200 mount IDs over 4 volumes and 2 identities, each mounted twice and unmounted twice, all at once."""
    names = [f"eng-v{i}" for i in range(4)]
    for name in names:
        await rig.volume(name)
    owners = {name: "alice" if i % 2 == 0 else "bob" for i, name in enumerate(names)}
    ids = [(f"m{i}", names[i % 4]) for i in range(200)]

    async def life(mount_id: str, volume: str) -> str:
        key = rig.key()
        owner = owners[volume]
        await rig.gate.claim(key, container="", owner=owner, volumes={volume: rig.identity_of(owner, volume)})
        try:
            first, again = await asyncio.gather(rig.driver.mount(volume, mount_id), rig.driver.mount(volume, mount_id))
        finally:
            await rig.gate.release(key)
        assert first == again
        return first

    paths = await asyncio.gather(*(life(m, v) for m, v in ids))
    assert rig.counts("eng-v0") == rig.counts("eng-v2") == {"10001:10000": 50}
    assert rig.counts("eng-v1") == rig.counts("eng-v3") == {"10002:10000": 50}
    assert len(rig.driver.registry.all_mounts()) == 200
    assert await rig.views() == ["10001:10000", "10002:10000"]
    assert set(paths) == {str(rig.backend.volume_path(ALICE if i % 2 == 0 else BOB, n)) for i, n in enumerate(names)}
    assert rig.write_through(ALICE, "eng-v0", "a") == 10001 and rig.write_through(BOB, "eng-v1", "b") == 10002
    random.shuffle(ids)
    await asyncio.gather(*(rig.driver.unmount(v, m) for m, v in ids), *(rig.driver.unmount(v, m) for m, v in ids[:50]))
    assert all(rig.counts(name) == {} for name in names)
    assert await rig.views() == []
    assert rig.restart().registry.all_mounts() == []


async def test_interleaved_mount_and_unmount_of_one_identity_never_loses_the_view(rig: Rig) -> None:
    """While one container unmounts and another mounts the same identity, the view stays up for the mounter."""
    await rig.volume("eng-v")
    for round_ in range(50):
        await rig.mount("eng-v", f"a{round_}")
        await asyncio.gather(rig.driver.unmount("eng-v", f"a{round_}"), rig.mount("eng-v", f"b{round_}"))
        assert await rig.views() == ["10001:10000"], round_
        assert rig.write_through(ALICE, "eng-v", f"f{round_}") == 10001, round_  # up and working
        await rig.driver.unmount("eng-v", f"b{round_}")
        assert await rig.views() == [], round_
    assert rig.counts("eng-v") == {}


# ------------------------------------------------------------------ rollback


async def test_failed_mount_leaves_no_record_and_no_view(rig: Rig) -> None:
    """A backend failure half way through a mount rolls back the record; a later mount works."""
    await rig.volume("eng-v")
    rig.fail.add("mount_identity")
    with pytest.raises(DriverError, match="injected"):
        await rig.mount("eng-v", "m1")
    assert rig.counts("eng-v") == {} and await rig.views() == []
    assert rig.restart().registry.all_mounts() == []  # nothing persisted either
    rig.fail.clear()
    await rig.mount("eng-v", "m1")
    assert rig.counts("eng-v") == {"10001:10000": 1} and await rig.views() == ["10001:10000"]


async def test_failed_copy_up_mount_rolls_back(rig: Rig) -> None:
    """If lending the top folder for an image copy fails, the mount is not counted and its view is not left."""
    await rig.volume("eng-v")
    await rig.mount("eng-v", "other")  # another user of the same identity keeps the view up
    rig.fail.add("set_top_folder")
    with pytest.raises(DriverError, match="injected"):
        await rig.mount("eng-v", "copy", container="web", for_create=True)
    assert rig.counts("eng-v") == {"10001:10000": 1} and await rig.views() == ["10001:10000"]
    assert [m.mount_id for m in rig.driver.registry.all_mounts()] == ["other"]
    assert rig.write_through(ALICE, "eng-v", "still-works") == 10001


async def test_failed_first_copy_up_mount_leaves_no_view(rig: Rig) -> None:
    """A copy-up mount that fails before its view is up leaves no record and no view of its identity."""
    await rig.volume("eng-v")
    rig.fail.add("set_top_folder")
    with pytest.raises(DriverError, match="injected"):
        await rig.mount("eng-v", "copy", owner="bob", container="web", for_create=True)
    assert rig.counts("eng-v") == {} and await rig.views() == []
    assert rig.restart().registry.all_mounts() == []


async def test_copy_up_lends_the_top_folder_and_unmount_returns_it(rig: Rig) -> None:
    """An image copy into an empty volume gets the top folder as its identity; Unmount restores owner and mode."""
    await rig.volume("eng-v", mode="0750")  # alice's folder, group may read: bob's view cannot write to it
    top = rig.base / "data" / "eng-v"
    assert (top.stat().st_uid, top.stat().st_mode & 0o7777) == (10001, 0o750)
    await rig.mount("eng-v", "copy", owner="bob", container="web", for_create=True)
    assert rig.driver.registry.all_mounts()[0].copy_up
    assert top.stat().st_uid == 10002  # lent to bob for the daemon's copy
    assert rig.write_through(BOB, "eng-v", "copied") == 10002
    await rig.driver.unmount("eng-v", "copy")
    assert (top.stat().st_uid, top.stat().st_gid, top.stat().st_mode & 0o7777) == (10001, 10000, 0o750)
    assert await rig.views() == []


async def test_a_restart_returns_a_top_folder_lent_before_it(rig: Rig) -> None:
    """The plugin died during bob's image copy (the Unmount never came): the restarted plugin gives the top folder
    back to its owner and mode at once, keeps counting the mount, and a later Unmount still finds it."""
    await rig.volume("eng-v", mode="0750")
    top = rig.base / "data" / "eng-v"
    await rig.mount("eng-v", "copy", owner="bob", container="web", for_create=True)
    assert top.stat().st_uid == 10002
    await rig.restart().reconcile()
    assert (top.stat().st_uid, top.stat().st_gid, top.stat().st_mode & 0o7777) == (10001, 10000, 0o750)
    (mount,) = rig.driver.registry.all_mounts()
    assert mount.mount_id == "copy" and not mount.copy_up and rig.counts("eng-v") == {"10002:10000": 1}
    await rig.driver.unmount("eng-v", "copy")
    assert rig.counts("eng-v") == {}


async def test_cancelled_mount_rolls_back(rig: Rig) -> None:
    """A Mount cancelled mid-way (the daemon hung up) leaves no record and no view behind."""
    await rig.volume("eng-v")
    release = asyncio.Event()
    rig.backend.paused["mount_identity"] = release
    task = asyncio.create_task(rig.mount("eng-v", "m1"))
    await until(lambda: rig.backend.calls["mount_identity"] == 1)
    assert rig.counts("eng-v") == {"10001:10000": 1}  # write-ahead record while the view is mounted
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.counts("eng-v") == {} and await rig.views() == []
    assert rig.gate.claims_on("eng-v") == []
    assert rig.restart().registry.all_mounts() == []
    await rig.mount("eng-v", "m2")  # the next mount is not held up by anything left over
    assert rig.counts("eng-v") == {"10001:10000": 1}


# ------------------------------------------------------------------ restarts


async def test_mounts_survive_a_plugin_restart_and_later_unmounts_count(rig: Rig) -> None:
    """Volumes, pins and mount records come back after a restart; the Unmounts that follow are honoured."""
    await rig.volume("eng-v", mode="0700", **PIN_ALICE)
    for i in range(3):
        await rig.mount("eng-v", f"m{i}")
    driver = rig.restart()
    info = driver.get("eng-v")
    assert info["Status"]["mounts"] == {"10001:10000": 3}
    assert info["Status"]["identity"] == "pinned to 10001:10000" and info["Status"]["mode"] == "0700"
    assert info["Mountpoint"] == str(rig.backend.volume_path(ALICE, "eng-v"))
    await driver.reconcile()
    assert await rig.views() == ["10001:10000"]  # in use: kept
    assert rig.write_through(ALICE, "eng-v", "after-restart") == 10001
    for i in range(3):
        await driver.unmount("eng-v", f"m{i}")
    assert rig.counts("eng-v") == {} and await rig.views() == []
    assert rig.restart().registry.all_mounts() == []


async def test_reconcile_after_reboot_drops_records_and_remounts_what_is_in_use(rig: Rig) -> None:
    """Records of an earlier boot go; a recorded view that is missing is mounted again; idle views go."""
    await rig.volume("eng-v")
    await rig.volume("eng-w")
    await rig.mount("eng-v", "current")
    old = MountRecord(mount_id="old", volume="eng-w", identity=BOB, boot_id="another-boot", mounted_at=1.0)
    await rig.driver.registry.add_mount(old)  # a boot cannot be simulated: its record is written as it was left
    await rig.backend.mount_identity(BOB)  # a view left by a crash, which no record accounts for
    view = rig.backend.view_root(ALICE)
    await asyncio.to_thread(subprocess.run, ["fusermount3", "-u", str(view)], check=True)  # unmounted by hand
    assert await rig.views() == ["10002:10000"]
    await rig.restart().reconcile()
    assert [m.mount_id for m in rig.driver.registry.all_mounts()] == ["current"]
    assert await rig.views() == ["10001:10000"]
    assert rig.write_through(ALICE, "eng-v", "remounted") == 10001
    assert current_boot_id()  # the machine has one, so the test above meant something


async def _kill_view_daemon(rig: Rig, identity: Identity) -> Path:
    """SIGKILL the bindfs serving `identity`'s view (a crash); returns the view's mount point."""
    view = rig.backend.view_root(identity)
    pids = bindfs_pids(view)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    await until(lambda: not bindfs_pids(view))
    with pytest.raises(OSError, match="not connected"):
        os.statvfs(view)  # the kernel already knows the daemon is gone
    return view


async def test_reconcile_remounts_a_view_whose_fuse_daemon_died(rig: Rig) -> None:
    """A view in use whose bindfs was killed (stale, ENOTCONN) works again after reconcile."""
    await rig.volume("eng-v")
    await rig.mount("eng-v", "m")
    view = await _kill_view_daemon(rig, ALICE)
    await until(lambda: is_stale(view))  # once the mount point's cached attributes expire (~1 s)
    await rig.restart().reconcile()
    assert await rig.views() == ["10001:10000"] and len(bindfs_pids(view)) == 1
    assert rig.write_through(ALICE, "eng-v", "alive") == 10001
    assert rig.counts("eng-v") == {"10001:10000": 1}


async def test_reconcile_right_after_a_fuse_daemon_died_remounts_its_view(rig: Rig) -> None:
    """A reconcile right after the view's bindfs died (plugin and bindfs killed together) remounts it."""
    await rig.volume("eng-v")
    await rig.mount("eng-v", "m")
    view = await _kill_view_daemon(rig, ALICE)
    await rig.restart().reconcile()
    assert len(bindfs_pids(view)) == 1
    assert rig.write_through(ALICE, "eng-v", "alive") == 10001


async def test_mount_without_a_claim_follows_the_daemons_restarting_containers(rig: Rig) -> None:
    """With no claim, the containers the daemon lists as restarting decide, by their owners: one identity is
    mounted, an unknown owner or a second identity is refused, and so is a mount with no evidence at all."""
    await rig.volume("eng-v")
    with pytest.raises(DriverError, match="no authorized start"):
        await rig.driver.mount("eng-v", "m")
    assert rig.counts("eng-v") == {} and await rig.views() == []
    bobs, alices, unknown = "b" * 64, "a" * 64, "c" * 64
    await rig.ledger.record(ContainerRecord(id=bobs, name="db", owner="bob"))
    await rig.ledger.record(ContainerRecord(id=alices, name="web", owner="alice"))
    rig.restarting.containers["eng-v"] = [bobs]
    assert await rig.driver.mount("eng-v", "m") == str(rig.backend.volume_path(BOB, "eng-v"))
    assert rig.counts("eng-v") == {"10002:10000": 1}
    assert rig.driver.registry.all_mounts()[0].containers == (bobs,)
    assert rig.write_through(BOB, "eng-v", "restarted") == 10002
    rig.restarting.containers["eng-v"] = [bobs, unknown]
    with pytest.raises(
        DriverError, match=f"container {unknown[:12]} restarts with volume eng-v, but it was not created"
    ):
        await rig.driver.mount("eng-v", "m2")
    rig.restarting.containers["eng-v"] = [bobs, alices]
    with pytest.raises(DriverError, match="containers of different identities at once"):
        await rig.driver.mount("eng-v", "m3")
    with pytest.raises(DriverError, match=f"{bobs[:12]} as 10002:10000"):
        await rig.mount("eng-v", "m4", owner="alice", container=alices)  # a claimed start is no exception
    rig.restarting.containers["eng-v"] = [alices]
    assert await rig.mount("eng-v", "m5", owner="alice", container=alices) == str(
        rig.backend.volume_path(ALICE, "eng-v")
    )
    assert rig.counts("eng-v") == {"10002:10000": 1, "10001:10000": 1}


# ------------------------------------------------------------------ pruning (a real daemon)


async def test_pruning_drops_only_what_the_daemon_shows_to_be_over(pruning_rig: Rig, containers: Containers) -> None:
    """Gone, stopped or since-restarted containers lose their records; running, young or doubtful ones stay."""
    rig, name = pruning_rig, "eng-p1"
    await rig.volume(name)
    running = containers.run(name)  # restarted *before* the mount: it holds it
    containers.stop(running)
    containers.ok("start", running)
    fresh, restarted, exited, gone = (containers.run(name) for _ in range(4))
    for mount_id, container in [
        ("running", running),
        ("fresh", fresh),
        ("restarted", restarted),
        ("exited", exited),
        ("gone", gone),
    ]:
        await rig.mount(name, mount_id, container=container)
    containers.stop(restarted)  # stopped and started again after its mount
    containers.ok("start", restarted)
    containers.stop(exited)
    containers.ok("rm", "-f", gone)
    assert [containers.state(c) for c in (running, fresh, restarted, exited)] == ["running"] * 3 + ["exited"]
    young = containers.create(name)  # a start whose Mount comes before the container runs
    await asyncio.sleep(0.1)
    young_since = time.time()
    await rig.mount(name, "young", container=young)

    def grace() -> float:  # only "young" is younger than this
        return time.time() - young_since + 0.05

    client, rig.daemon = rig.daemon, DaemonClient(f"unix://{rig.base}/no-daemon.sock")  # a daemon that is down
    try:
        assert await rig.restart().prune_stale_mounts(grace=grace()) == 0
    finally:
        assert rig.daemon is not None
        await rig.daemon.close()
        rig.daemon = client
    assert len(rig.driver.registry.all_mounts()) == 6
    assert await rig.restart().prune_stale_mounts(grace=grace()) == 3
    assert sorted(m.mount_id for m in rig.driver.registry.all_mounts()) == ["fresh", "running", "young"]
    assert rig.counts(name) == {"10001:10000": 3} and await rig.views() == ["10001:10000"]
    assert await rig.driver.prune_stale_mounts(grace=0) == 1  # "young" was kept by its age alone
    assert sorted(m.mount_id for m in rig.driver.registry.all_mounts()) == ["fresh", "running"]


async def test_pruning_keeps_a_start_mount_made_while_another_create_was_in_flight(
    pruning_rig: Rig, containers: Containers
) -> None:
    """A mount flagged copy-up (some create was in flight) is kept while its own container runs."""
    rig, name = pruning_rig, "eng-p2"
    await rig.volume(name)
    running = containers.run(name)
    creating = rig.key()  # another container's create, still in flight: it names the container by name
    await rig.gate.claim(
        creating, container="other-being-created", owner="alice", volumes={name: ALICE}, for_create=True
    )
    try:
        await rig.mount(name, "m", container=running)
    finally:
        await rig.gate.release(creating)
    (mount,) = rig.driver.registry.all_mounts()
    assert mount.copy_up and mount.containers == tuple(sorted(("other-being-created", running)))
    await asyncio.sleep(0.2)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 0
    containers.stop(running)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 1
    assert rig.counts(name) == {} and await rig.views() == []


async def test_a_start_allowed_before_a_restart_mounts_for_its_own_container(
    pruning_rig: Rig, containers: Containers
) -> None:
    """The daemon retries a Mount that found no plugin: one for a start allowed just before a restart reaches
    the new process. The start's claim came back with the journal, so the record names that container (not
    only another create in flight) and the pruner keeps it while the container runs."""
    rig, name = pruning_rig, "eng-p5"
    await rig.volume(name)
    started = containers.run(name)
    starting = rig.key()
    await rig.gate.claim(starting, container=started, owner="alice", volumes={name: ALICE})  # its AuthZReq
    rig.restart()  # before the Mount: the daemon retries it on the new process
    creating = rig.key()
    await rig.gate.claim(creating, container="other-being-created", owner="alice", volumes={name: ALICE},
                         for_create=True)  # fmt: skip
    try:
        await rig.driver.mount(name, "m")
    finally:
        await rig.gate.release(creating)
        await rig.gate.release(starting)  # its AuthZRes, retried on the new process too
    (mount,) = rig.driver.registry.all_mounts()
    assert mount.containers == tuple(sorted(("other-being-created", started)))
    await asyncio.sleep(0.2)
    assert await rig.restart().prune_stale_mounts(grace=0.1) == 0
    assert rig.counts(name) == {"10001:10000": 1}
    containers.stop(started)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 1


async def test_pruning_records_without_containers_needs_no_live_user(pruning_rig: Rig, containers: Containers) -> None:
    """A record naming no container (an unnamed create's) is only dropped when no container using the volume is live."""
    rig, name = pruning_rig, "eng-p3"
    await rig.volume(name)
    await rig.mount(name, "m", container="", for_create=True)  # `docker run` without --name
    assert rig.driver.registry.all_mounts()[0].containers == ()
    someone = containers.run(name)
    await asyncio.sleep(0.2)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 0
    containers.stop(someone)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 1
    assert await rig.views() == []  # its view went with its last user


async def test_pruning_judges_a_record_by_the_container_it_names(pruning_rig: Rig, containers: Containers) -> None:
    """Records that name a container only by the name its create gave it (mounts made while creates were in
    flight, e.g. claims taken back after a crash) hold while that container runs: one per mount point stays,
    and it goes once the container stops."""
    rig, name = pruning_rig, "eng-p5"
    await rig.volume(name)
    running = containers.run(name)
    named = containers.ok("inspect", "-f", "{{.Name}}", running).lstrip("/")
    for mount_id in ("create-copy", "start"):
        await rig.mount(name, mount_id, container=named, for_create=True)
    await asyncio.sleep(0.2)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 1  # a surplus record, not both as "over"
    assert rig.counts(name) == {"10001:10000": 1}
    containers.stop(running)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 1
    assert rig.counts(name) == {}


async def test_pruning_drops_records_beyond_the_live_mount_points(pruning_rig: Rig, containers: Containers) -> None:
    """After a crash lost Unmounts, several records can name one running container (each made while its start's
    claim was live): only as many stay as it has mount points of the volume, and none while a mount is in flight."""
    rig, name = pruning_rig, "eng-p4"
    await rig.volume(name)
    first, second = containers.run(name), containers.run(name)
    starting = rig.key()  # `second` starting while `first` creates and starts: every Mount names both
    await rig.gate.claim(starting, container=second, owner="alice", volumes={name: ALICE})
    try:
        for mount_id in ("copy", "first", "lost"):
            await rig.mount(name, mount_id, container=first, for_create=mount_id == "copy")
    finally:
        await rig.gate.release(starting)
    await rig.mount(name, "second", container=second)
    await asyncio.sleep(0.2)
    claim = rig.key()
    await rig.gate.claim(claim, container=first, owner="alice", volumes={name: ALICE})
    try:
        assert await rig.driver.prune_stale_mounts(grace=0.1) == 0  # a request mounting it is in flight
    finally:
        await rig.gate.release(claim)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 2
    assert rig.counts(name) == {"10001:10000": 2}
    assert "second" in {m.mount_id for m in rig.driver.registry.all_mounts()}  # the one naming only itself
    containers.stop(first)
    assert await rig.driver.prune_stale_mounts(grace=0.1) == 1
    assert rig.counts(name) == {"10001:10000": 1} and await rig.views() == ["10001:10000"]


# ------------------------------------------------------------------ removal


async def test_volume_in_use_cannot_be_removed(rig: Rig) -> None:
    """Remove is refused while a mount is recorded, even one in flight (write-ahead)."""
    await rig.volume("eng-v", purge="true")
    await rig.mount("eng-v", "m")
    rig.gate.grant("r", kind="remove", volume="eng-v", subject="@local", options={})
    with pytest.raises(DriverError, match="in use by 1 container mount"):
        await rig.driver.remove("eng-v")
    assert rig.stored() == ["eng-v"]
    release = asyncio.Event()
    rig.backend.paused["mount_identity"] = release
    in_flight = asyncio.create_task(rig.mount("eng-v", "m2"))  # recorded, its view not yet confirmed
    await until(lambda: rig.backend.calls["mount_identity"] == 2)
    unmounting = asyncio.create_task(rig.driver.unmount("eng-v", "m"))
    await until(lambda: rig.driver.registry.mount("m", "eng-v") is None)
    with pytest.raises(DriverError, match="in use by 1 container mount"):
        await rig.driver.remove("eng-v")
    release.set()
    await asyncio.gather(in_flight, unmounting)
    assert rig.stored() == ["eng-v"] and rig.counts("eng-v") == {"10001:10000": 1}
    await rig.driver.unmount("eng-v", "m2")
    await rig.driver.remove("eng-v")
    await rig.driver.remove("eng-v")  # again: nothing to do, not an error
    assert "eng-v" not in rig.driver.registry and rig.stored() == []


async def test_remove_racing_a_mount_never_leaves_a_mount_of_a_removed_volume(rig: Rig) -> None:
    """Concurrent Mount and Remove: either the remove is refused or the mount fails; never both succeed."""
    outcomes: Counter[bool] = Counter()
    for round_ in range(30):
        name = f"eng-r{round_}"
        await rig.volume(name, purge="true")
        rig.gate.grant(f"rm{round_}", kind="remove", volume=name, subject="@local", options={})
        results = await asyncio.gather(rig.mount(name, "m"), rig.driver.remove(name), return_exceptions=True)
        mounted, removed = (not isinstance(r, BaseException) for r in results)
        assert mounted != removed, results
        assert all(isinstance(r, DriverError) for r in results if isinstance(r, BaseException)), results
        assert (name in rig.driver.registry) == mounted == (name in rig.stored())
        if mounted:
            assert rig.counts(name) == {"10001:10000": 1}
        else:
            assert rig.driver.registry.mounts_of(name) == []
        outcomes[mounted] += 1
        if mounted:
            await rig.driver.unmount(name, "m")
    assert await rig.views() == []
    assert sum(outcomes.values()) == 30


async def test_purge_is_an_explicit_choice(rig: Rig) -> None:
    """Data is kept by default; -o purge=true or the plugin default deletes it; -o purge=false wins over the default."""
    for name, options in [("eng-keep", {}), ("eng-purge", {"purge": "true"})]:
        await rig.volume(name, **options)
    rig.restart(purge_default=True)
    await rig.volume("eng-default")
    await rig.volume("eng-explicit-keep", purge="false")
    for name in ["eng-keep", "eng-purge", "eng-default", "eng-explicit-keep"]:
        (rig.base / "data" / name / "data").write_text(name)
        rig.gate.grant(name, kind="remove", volume=name, subject="@local", options={})
        await rig.driver.remove(name)
    assert rig.stored() == ["eng-explicit-keep", "eng-keep"]
    assert (rig.base / "data" / "eng-keep" / "data").read_text() == "eng-keep"
    assert rig.driver.registry.names() == []


async def test_purge_through_the_driver_never_follows_symlinks_into_another_volume(rig: Rig) -> None:
    """Purging a volume with a symlink to a sibling volume deletes the link, not the sibling's data."""
    data = rig.base / "data"
    await rig.volume("eng-victim")
    await rig.volume("eng-doomed", purge="true")
    (data / "eng-victim" / "precious").write_text("keep me")
    (data / "eng-doomed" / "junk").write_text("x")
    (data / "eng-doomed" / "link").symlink_to(data / "eng-victim")
    (data / "eng-doomed" / "file-link").symlink_to(data / "eng-victim" / "precious")
    rig.gate.grant("r", kind="remove", volume="eng-doomed", subject="@local", options={})
    await rig.driver.remove("eng-doomed")
    assert not (data / "eng-doomed").exists()
    assert (data / "eng-victim" / "precious").read_text() == "keep me"
    assert Counter(p.name for p in data.iterdir()) == Counter(["eng-victim"])


# ------------------------------------------------------------------ queries and creation


async def test_get_and_list_answer_while_the_backend_is_down(rig: Rig) -> None:
    """After a daemon restart the daemon drops volumes whose Get fails: Get/List/Path never touch the backend."""
    await rig.volume("eng-v", mode="0750")
    await rig.mount("eng-v", "m")
    rig.fail.update(BACKEND_CALLS)
    driver = rig.restart()
    assert driver.get("eng-v")["Status"]["mode"] == "0750"
    assert [v["Name"] for v in driver.list()] == ["eng-v"]
    assert driver.path("eng-v") == str(rig.backend.volume_path(ALICE, "eng-v"))
    assert rig.backend.calls == Counter()  # not one backend call was even tried
    with pytest.raises(DriverError, match="injected"):
        await rig.mount("eng-v", "m2")  # the backend really is down
    assert rig.counts("eng-v") == {"10001:10000": 1}


async def test_the_calls_answered_at_once_finish_without_waiting(rig: Rig) -> None:
    """The volume calls answered where the daemon's call arrives, with no task of their own (plugin.http), never wait
    on a single host: for a volume mounted or not, and for a name fixeduser does not know."""
    await rig.volume("eng-v")
    handlers = volume_handlers(rig.driver)
    assert set(ANSWERED_AT_ONCE) < set(handlers)

    def answer_in_one_step(call: str, name: str) -> dict[str, Any]:
        answering = handlers[call]({"Name": name})
        with pytest.raises(StopIteration) as finished:
            answering.send(None)
        return cast(dict[str, Any], finished.value.value)

    for mounted in (False, True):
        if mounted:
            await rig.mount("eng-v", "m")
        view = str(rig.backend.volume_path(ALICE, "eng-v")) if mounted else ""
        assert answer_in_one_step("VolumeDriver.Path", "eng-v") == {"Err": "", "Mountpoint": view}
        assert answer_in_one_step("VolumeDriver.Get", "eng-v")["Volume"]["Mountpoint"] == view
        assert [v["Name"] for v in answer_in_one_step("VolumeDriver.List", "")["Volumes"]] == ["eng-v"]
        assert answer_in_one_step("VolumeDriver.Capabilities", "")["Capabilities"] == {"Scope": "local"}
        for call in ("VolumeDriver.Get", "VolumeDriver.Path"):
            assert "no such fixeduser volume" in answer_in_one_step(call, "eng-unknown")["Err"]


async def test_concurrent_creates_make_one_volume(rig: Rig) -> None:
    """Repeated and concurrent Creates of one name create it once and keep the first record."""
    for key in range(5):
        rig.gate.grant(f"k{key}", kind="create", volume="eng-v", subject="alice", options={})
    await asyncio.gather(*(rig.driver.create("eng-v", {"mode": f"07{i}0"}) for i in range(5)))
    assert rig.driver.registry.names() == ["eng-v"] and rig.stored() == ["eng-v"]
    assert rig.backend.calls["create_volume"] == 1
    mode = rig.driver.get("eng-v")["Status"]["mode"]
    assert mode == f"{(rig.base / 'data' / 'eng-v').stat().st_mode & 0o7777:04o}"  # record and storage agree
    assert rig.restart().get("eng-v")["Status"]["mode"] == mode


async def test_quobyte_options_are_refused_by_the_local_backend(rig: Rig) -> None:
    """-o tenant/-o configuration only mean something to the quobyte backend: refused with the reason."""
    for option in ("tenant", "configuration"):
        rig.gate.grant("k", kind="create", volume="eng-v", subject="alice", options={})
        with pytest.raises(DriverError, match="only apply to the quobyte backend; this plugin runs the local backend"):
            await rig.driver.create("eng-v", {option: "t2"})
    assert "eng-v" not in rig.driver.registry
    assert rig.backend.calls["create_volume"] == 0 and not (rig.base / "data" / "eng-v").exists()


async def test_idle_views_go_at_once_at_shutdown_whatever_their_grace(rig: Rig) -> None:
    """At shutdown (and start) views no container uses are unmounted then and there: a grace timer would never
    run in a plugin that is stopping, and its views would outlive it."""
    rig.restart(view_idle_seconds=60)
    await rig.volume("eng-v")
    await rig.mount("eng-v", "m1", container="c" * 64)
    await rig.driver.unmount("eng-v", "m1")
    assert await rig.views() == ["10001:10000"]  # within its grace
    await rig.driver.unmount_idle_views()
    assert rig.backend.calls["unmount_identity"] == 1
    assert not is_mount_point(rig.backend.view_root(ALICE)) and await rig.views() == []


async def test_idle_view_stays_mounted_for_the_grace_period(rig: Rig) -> None:
    """An unused view survives its grace period (docker run mounts twice), then goes; a new mount cancels that."""
    rig.restart(view_idle_seconds=0.3)
    await rig.volume("eng-v")
    await rig.mount("eng-v", "create-time", container="web", for_create=True)
    await rig.driver.unmount("eng-v", "create-time")
    assert await rig.views() == ["10001:10000"]  # kept for the start that follows
    await rig.mount("eng-v", "start", container="c" * 64)
    assert rig.backend.calls["mount_identity"] == 2 and len(bindfs_pids(rig.backend.view_root(ALICE))) == 1
    await asyncio.sleep(0.45)
    assert await rig.views() == ["10001:10000"]  # in use: the grace timer did not unmount it
    assert rig.backend.calls["unmount_identity"] == 0
    await rig.driver.unmount("eng-v", "start")
    await asyncio.sleep(0.1)
    assert await rig.views() == ["10001:10000"]  # still within the grace period
    # The grace timer's unmount must finish inside the test: a closing event loop would cut it off.
    await until(lambda: rig.backend.finished["unmount_identity"] == 1)
    assert rig.backend.calls["unmount_identity"] == 1
    assert not is_mount_point(rig.backend.view_root(ALICE)) and await rig.views() == []
