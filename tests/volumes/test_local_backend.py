"""LocalBackend against real bindfs and FUSE (root only), plus the pure helpers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.linux.mounts import is_mount_point, is_stale, mounts_at, mounts_below, parse_mountinfo
from fixeduser.policy.identity import Identity
from fixeduser.sandbox import pid_alive
from fixeduser.volumes.backends import Backend, BackendError, LocalBackend, prepare_host_for_fuse
from fixeduser.volumes.backends.local import PATHS_KEPT, bindfs_fuse_major
from tests.waiting import wait_until

from .processes import bindfs_argv, bindfs_pids

A = Identity(uid=10001, gid=10000, user="10001", group="10000")
B = Identity(uid=10002, gid=10000, user="10002", group="10000")

needs_fuse = pytest.mark.usefixtures("fuse_host")


@pytest.fixture(scope="session")
def fuse_host() -> None:
    """Root, bindfs and a FUSE setup usable by non-root daemons; test users for A and B."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("bindfs") is None or shutil.which("setpriv") is None:
        pytest.skip("needs bindfs and setpriv")
    if not Path("/dev/fuse").exists():
        pytest.skip("needs /dev/fuse")
    prepare_host_for_fuse()
    for ident in (A, B):
        # fusermount3 needs a user name for the mounting uid.
        if subprocess.run(["getent", "passwd", str(ident.uid)], check=False, capture_output=True).returncode:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 "--uid", str(ident.uid), f"fxu{ident.uid}"],
                check=True, capture_output=True,
            )  # fmt: skip


def _sh(*argv: str) -> int:
    return subprocess.run(argv, check=False, capture_output=True).returncode


def _lexists(path: Path) -> bool:
    return path.is_symlink() or path.exists()


def _lazy_unmount_below(path: Path) -> None:
    for entry in mounts_below(path):
        _sh("umount", "-l", entry.mount_point)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A private dir under /tmp whose ancestors are o+x; everything below is unmounted after."""
    base = Path(tempfile.mkdtemp(prefix="fixeduser-lb-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        _lazy_unmount_below(base)
        if not mounts_below(base):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def backend(fuse_host: None, base_dir: Path) -> LocalBackend:
    """A LocalBackend on a fresh root/mount_root pair."""
    return LocalBackend(root=base_dir / "data", mount_root=base_dir / "mnt")


# ------------------------------------------------------------------ pure helpers


def test_local_backend_satisfies_protocol(tmp_path: Path) -> None:
    """LocalBackend is a structural Backend with name "local" and local scope."""
    b = LocalBackend(root=tmp_path / "d", mount_root=tmp_path / "m")
    assert isinstance(b, Backend)
    assert (b.name, b.scope) == ("local", "local")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "-x", ".hidden", "a b", "x\0y", "é", "x" * 256])
async def test_invalid_volume_names_rejected(tmp_path: Path, name: str) -> None:
    """Names that are not one safe path component raise BackendError before any path use."""
    b = LocalBackend(root=tmp_path / "d", mount_root=tmp_path / "m")
    with pytest.raises(BackendError, match="invalid volume name"):
        await b.create_volume(name, owner=A, mode=0o770)
    with pytest.raises(BackendError, match="invalid volume name"):
        await b.remove_volume(name, purge=True)
    with pytest.raises(BackendError, match="invalid volume name"):
        await b.volume_exists(name)
    with pytest.raises(BackendError, match="invalid volume name"):
        b.volume_path(A, name)
    assert not (tmp_path / "d").exists()


def test_overlapping_root_and_mount_root_rejected(tmp_path: Path) -> None:
    """mount_root inside root (or the reverse) is refused at construction."""
    with pytest.raises(BackendError, match="must not contain each other"):
        LocalBackend(root=tmp_path, mount_root=tmp_path / "m")


def test_volume_path_layout(tmp_path: Path) -> None:
    """volume_path is mount_root/<uid>-<gid>/view/<volume>, asked once or many times (the paths are kept built)."""
    b = LocalBackend(root=tmp_path / "d", mount_root=tmp_path / "m")
    for _ in range(2):
        assert b.volume_path(A, "v1") == tmp_path / "m" / "10001-10000" / "view" / "v1"
        assert b.volume_path(B, "v1") == tmp_path / "m" / "10002-10000" / "view" / "v1"
        assert b.view_root(A) == tmp_path / "m" / "10001-10000" / "view"
        assert b.guard_dir(B) == tmp_path / "m" / "10002-10000"
    # Same numbers, other spellings: the same identity, the same folders.
    assert b.volume_path(Identity(uid=A.uid, gid=A.gid, user="alice", group="eng"), "v1") == b.volume_path(A, "v1")
    with pytest.raises(BackendError, match="invalid volume name"):
        b.volume_path(A, "../v1")  # a bad name is refused each time, never kept
    many = [Identity(uid=20000 + i, gid=20000, user=f"u{i}", group="g") for i in range(PATHS_KEPT + 10)]
    for identity in many:  # more identities than are kept: the first ones are built again, right
        assert b.view_root(identity) == tmp_path / "m" / f"{identity.uid}-20000" / "view"
    assert b.view_root(many[0]) == tmp_path / "m" / "20000-20000" / "view"


def test_parse_mountinfo_decodes_escapes() -> None:
    """Octal escapes in mount point and source are decoded; optional fields are skipped."""
    text = (
        "36 35 98:0 /mnt1 /mnt/a\\040b\\011c rw,noatime master:1 shared:2 - fuse.bindfs "
        "/src\\134x rw,user_id=1\n"
        "garbage line\n"
    )
    [entry] = parse_mountinfo(text)
    assert entry.mount_point == "/mnt/a b\tc"
    assert entry.fstype == "fuse.bindfs"
    assert entry.source == "/src\\x"
    assert (entry.mount_id, entry.parent_id) == (36, 35)


def test_is_mount_point_and_is_stale_on_plain_dirs(tmp_path: Path) -> None:
    """A plain directory is neither a mount point nor stale; / is a mount point."""
    assert not is_mount_point(tmp_path)
    assert not is_stale(tmp_path)
    assert is_mount_point("/")


# ------------------------------------------------------------------ real bindfs


@needs_fuse
async def test_files_created_through_views_belong_to_their_identity(backend: LocalBackend) -> None:
    """Root writing through A's view creates A-owned files; through B's view, B-owned ones."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    data = backend.root / "v1"
    assert (os.stat(data).st_uid, os.stat(data).st_gid) == (10001, 10000)
    assert os.stat(data).st_mode & 0o7777 == 0o770
    await backend.mount_identity(A)
    await backend.mount_identity(B)
    (backend.volume_path(A, "v1") / "by_a").write_text("a")
    (backend.volume_path(B, "v1") / "by_b").write_text("b")
    os.mkdir(backend.volume_path(B, "v1") / "dir_b")
    assert (os.stat(data / "by_a").st_uid, os.stat(data / "by_a").st_gid) == (10001, 10000)
    assert (os.stat(data / "by_b").st_uid, os.stat(data / "by_b").st_gid) == (10002, 10000)
    assert os.stat(data / "dir_b").st_uid == 10002
    assert sorted(await backend.mounted_identities()) == ["10001:10000", "10002:10000"]


@needs_fuse
async def test_private_file_unreadable_through_other_identity(backend: LocalBackend) -> None:
    """A 0600 file made through A's view cannot be read through B's view, even by root."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    await backend.mount_identity(A)
    await backend.mount_identity(B)
    secret = backend.volume_path(A, "v1") / "secret"
    secret.write_text("s3cret")
    os.chmod(secret, 0o600)
    assert secret.read_text() == "s3cret"
    with pytest.raises(PermissionError):
        (backend.volume_path(B, "v1") / "secret").read_text()


@needs_fuse
async def test_chown_through_view_changes_nothing(backend: LocalBackend) -> None:
    """Root in a view is not root: chown is ignored and files keep the view's identity."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    await backend.mount_identity(A)
    f = backend.volume_path(A, "v1") / "f"
    f.write_text("x")
    os.chown(f, 0, 0)
    info = os.stat(backend.root / "v1" / "f")
    assert (info.st_uid, info.st_gid) == (10001, 10000)


@needs_fuse
async def test_views_are_closed_to_other_host_users(backend: LocalBackend) -> None:
    """Only root and the identity itself can pass the guard dir in front of a view."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    await backend.mount_identity(A)
    target = str(backend.volume_path(A, "v1"))

    def stat_as(ident: Identity) -> int:
        argv = ["setpriv", f"--reuid={ident.uid}", f"--regid={ident.gid}", "--clear-groups",
                "stat", target]  # fmt: skip
        return subprocess.run(argv, check=False, capture_output=True).returncode

    assert stat_as(B) != 0
    assert stat_as(A) == 0


@needs_fuse
async def test_mount_identity_twice_gives_one_mount(backend: LocalBackend) -> None:
    """mount_identity is idempotent: the second call reuses the live mount."""
    first = await backend.mount_identity(A)
    second = await backend.mount_identity(A)
    assert first == second == backend.view_root(A)
    assert len(mounts_at(first)) == 1
    assert await backend.mounted_identities() == ["10001:10000"]


def _bindfs_argv(mount_point: Path) -> list[bytes]:
    (pid,) = bindfs_pids(mount_point)
    return bindfs_argv(pid)


@needs_fuse
async def test_views_ask_libfuse_2_for_large_writes(backend: LocalBackend, base_dir: Path) -> None:
    """With a bindfs on libfuse 2 (Debian's), views run with `-o big_writes` (4 KiB write requests otherwise);
    with libfuse 3, which rejects it, or when turned off, they do not. Big writes still land as the identity."""
    view = await backend.mount_identity(A)
    major = bindfs_fuse_major("bindfs")
    assert major in (2, 3), major
    expected = major == 2
    assert (b"big_writes" in _bindfs_argv(view)) is expected
    await backend.create_volume("big", owner=A, mode=0o770)
    block = os.urandom(1 << 20)
    (backend.volume_path(A, "big") / "f").write_bytes(block * 4)
    stored = backend.root / "big" / "f"
    assert stored.read_bytes() == block * 4 and stored.stat().st_uid == A.uid
    plain = LocalBackend(root=base_dir / "data", mount_root=base_dir / "mnt2", large_writes=False)
    try:
        assert b"big_writes" not in _bindfs_argv(await plain.mount_identity(B))
    finally:
        await plain.unmount_identity(B)


@needs_fuse
async def test_unmount_identity_is_idempotent(backend: LocalBackend) -> None:
    """Unmounting twice, or unmounting a never-mounted identity, is fine."""
    await backend.unmount_identity(B)
    mp = await backend.mount_identity(A)
    await backend.unmount_identity(A)
    assert not is_mount_point(mp)
    await backend.unmount_identity(A)
    assert await backend.mounted_identities() == []
    wait_until(lambda: not bindfs_pids(mp), "the view's bindfs to exit")


@needs_fuse
async def test_busy_view_is_unmounted_lazily(backend: LocalBackend) -> None:
    """A view kept busy by an open file is detached anyway (umount -l fallback)."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    mp = await backend.mount_identity(A)
    with (backend.volume_path(A, "v1") / "open").open("w") as f:
        await backend.unmount_identity(A)
        assert not is_mount_point(mp)
        f.write("still writable through the detached mount")
    assert (backend.root / "v1" / "open").read_text().startswith("still")


@needs_fuse
async def test_stale_mount_is_repaired(backend: LocalBackend) -> None:
    """After the bindfs daemon dies, mount_identity replaces the dead mount with a live one."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    mp = await backend.mount_identity(A)
    pids = bindfs_pids(mp)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: is_stale(mp), "the view to be stale")
    assert await backend.mounted_identities() == ["10001:10000"]
    assert await backend.mount_identity(A) == mp
    assert not is_stale(mp)
    assert len(mounts_at(mp)) == 1
    (backend.volume_path(A, "v1") / "after").write_text("ok")
    assert os.stat(backend.root / "v1" / "after").st_uid == 10001


@needs_fuse
async def test_bindfs_failure_reports_its_error(backend: LocalBackend, base_dir: Path) -> None:
    """A failing bindfs raises BackendError carrying bindfs's own message; nothing stays mounted."""
    bad = LocalBackend(root=base_dir / "data", mount_root=base_dir / "mnt", bindfs_options=["--no-such-option"])
    with pytest.raises(BackendError, match=r"bindfs exit status \d+\): .*no-such-option"):
        await bad.mount_identity(A)
    assert not is_mount_point(bad.view_root(A))


@needs_fuse
async def test_create_volume_keeps_existing_volume(backend: LocalBackend) -> None:
    """Creating an existing volume again keeps its data, owner and mode."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    (backend.root / "v1" / "data").write_text("keep")
    await backend.create_volume("v1", owner=B, mode=0o700)
    st = os.stat(backend.root / "v1")
    assert (st.st_uid, st.st_mode & 0o7777) == (10001, 0o770)
    assert (backend.root / "v1" / "data").read_text() == "keep"
    assert await backend.volume_exists("v1")
    assert not await backend.volume_exists("v2")


@needs_fuse
async def test_remove_without_purge_keeps_data(backend: LocalBackend) -> None:
    """remove_volume(purge=False) leaves the backing directory and its files."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    (backend.root / "v1" / "data").write_text("keep")
    await backend.remove_volume("v1", purge=False)
    assert (backend.root / "v1" / "data").read_text() == "keep"
    assert await backend.volume_exists("v1")


@needs_fuse
async def test_purge_never_follows_symlinks(backend: LocalBackend, base_dir: Path) -> None:
    """Purge deletes the volume tree but not what its symlinks point to."""
    outside = base_dir / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sentinel").write_text("must survive")
    (outside / "sub" / "sentinel2").write_text("must survive")
    await backend.create_volume("v1", owner=A, mode=0o770)
    vol = backend.root / "v1"
    (vol / "a" / "b" / "c").mkdir(parents=True)
    (vol / "a" / "b" / "c" / "deep").write_text("x")
    (vol / "a" / "file").write_text("x")
    (vol / "dirlink").symlink_to(outside)
    (vol / "a" / "b" / "filelink").symlink_to(outside / "sentinel")
    (vol / "a" / "dangling").symlink_to(base_dir / "nowhere")
    await backend.remove_volume("v1", purge=True)
    assert not _lexists(vol)
    assert (outside / "sentinel").read_text() == "must survive"
    assert (outside / "sub" / "sentinel2").read_text() == "must survive"
    assert not await backend.volume_exists("v1")
    await backend.remove_volume("v1", purge=True)  # already gone: no error


@needs_fuse
async def test_purge_of_symlinked_volume_removes_only_the_link(backend: LocalBackend, base_dir: Path) -> None:
    """If root/<volume> itself is a symlink, purge unlinks it and leaves the target alone."""
    outside = base_dir / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("must survive")
    await backend.create_volume("other", owner=A, mode=0o770)  # makes root
    (backend.root / "v1").symlink_to(outside)
    assert not await backend.volume_exists("v1")
    await backend.remove_volume("v1", purge=True)
    assert not _lexists(backend.root / "v1")
    assert (outside / "sentinel").read_text() == "must survive"


@needs_fuse
async def test_purge_refuses_to_cross_into_a_mount(backend: LocalBackend) -> None:
    """A mount inside the volume makes purge fail without deleting anything."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    inner = backend.root / "v1" / "mnt"
    inner.mkdir()
    (backend.root / "v1" / "keep").write_text("x")
    assert _sh("mount", "-t", "tmpfs", "tmpfs", str(inner)) == 0
    try:
        (inner / "inside").write_text("x")
        with pytest.raises(BackendError, match="mount point inside"):
            await backend.remove_volume("v1", purge=True)
        assert (inner / "inside").exists()
        assert (backend.root / "v1" / "keep").exists()
    finally:
        _sh("umount", "-l", str(inner))


@needs_fuse
async def test_check_names_the_untraversable_path(base_dir: Path) -> None:
    """check() fails with the exact ancestor that lacks o+x."""
    closed = base_dir / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    b = LocalBackend(root=closed / "data", mount_root=base_dir / "mnt")
    with pytest.raises(BackendError, match=rf"{closed} \(mode 0700\) is not traversable"):
        await b.check()
    with pytest.raises(BackendError, match="not traversable"):
        await b.mount_identity(A)


@needs_fuse
async def test_root_identity_refused(backend: LocalBackend) -> None:
    """A root identity never gets a view."""
    with pytest.raises(BackendError, match="root"):
        await backend.mount_identity(Identity(uid=0, gid=10000, user="root", group="10000"))


@needs_fuse
async def test_concurrent_mounts_of_one_identity_make_one_mount(backend: LocalBackend) -> None:
    """Concurrent mount_identity calls for one identity are serialized into a single mount."""
    paths = await asyncio.gather(*(backend.mount_identity(A) for _ in range(5)))
    assert set(paths) == {backend.view_root(A)}
    assert len(mounts_at(backend.view_root(A))) == 1
    assert len(bindfs_pids(backend.view_root(A))) == 1


# ------------------------------------------------------------------ view liveness by events


def _state_of(pid: int) -> str:
    """The process's state letter (Z: a zombie nobody reaped), "" once it is gone."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return ""
    return text[text.rfind(")") + 2]


@needs_fuse
async def test_a_view_whose_bindfs_hangs_is_handed_out_without_asking_it(backend: LocalBackend) -> None:
    """An up view is known by its process and the mount table: a Mount does not go through FUSE (a stopped
    bindfs would hold such a probe for its whole timeout and then have the view remounted under its users)."""
    mp = await backend.mount_identity(A)
    (pid,) = bindfs_pids(mp)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert await asyncio.wait_for(backend.mount_identity(A), 2) == mp
        assert bindfs_pids(mp) == [pid]
    finally:
        os.kill(pid, signal.SIGCONT)


@needs_fuse
async def test_a_dead_view_is_stale_at_once_and_its_bindfs_is_reaped(backend: LocalBackend) -> None:
    """When the view's bindfs dies, the plugin hears it from the kernel: the process is reaped without any
    Mount asking, and the next Mount mounts a new view."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    mp = await backend.mount_identity(A)
    (pid,) = bindfs_pids(mp)
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        await asyncio.sleep(0.01)  # the event loop runs the pidfd's reader
        if _state_of(pid) == "":
            break
    assert _state_of(pid) == "", "the dead bindfs was left a zombie"
    assert await backend.mount_identity(A) == mp
    (new_pid,) = bindfs_pids(mp)
    assert new_pid != pid and len(mounts_at(mp)) == 1
    (backend.volume_path(A, "v1") / "f").write_text("ok")
    assert os.stat(backend.root / "v1" / "f").st_uid == A.uid


@needs_fuse
async def test_a_mount_covering_the_view_is_not_handed_out(backend: LocalBackend) -> None:
    """Something mounted over the view (by root, or by the identity with fusermount3) is not the view:
    the next Mount clears the mount point and mounts the identity's bindfs there again."""
    await backend.create_volume("v1", owner=A, mode=0o770)
    mp = await backend.mount_identity(A)
    assert _sh("mount", "-t", "tmpfs", "cover", str(mp)) == 0
    assert mounts_at(mp)[-1].fstype == "tmpfs"
    assert await backend.mount_identity(A) == mp
    stacked = mounts_at(mp)
    assert [m.fstype for m in stacked] == ["fuse"], stacked
    (backend.volume_path(A, "v1") / "f").write_text("ok")
    assert os.stat(backend.root / "v1" / "f").st_uid == A.uid


@needs_fuse
async def test_a_restarted_plugin_adopts_the_views_it_finds(backend: LocalBackend, base_dir: Path) -> None:
    """A new backend (a restarted plugin) follows the running views by their start records: an up view is
    kept (same bindfs), and its death is then seen at once as well."""
    mp = await backend.mount_identity(A)
    (pid,) = bindfs_pids(mp)
    await backend.close()
    again = LocalBackend(root=base_dir / "data", mount_root=base_dir / "mnt")
    os.kill(pid, signal.SIGSTOP)  # an adopted view is not probed either
    try:
        assert await asyncio.wait_for(again.mount_identity(A), 2) == mp
    finally:
        os.kill(pid, signal.SIGCONT)
    assert bindfs_pids(mp) == [pid]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _state_of(pid) in ("", "Z"), "the killed bindfs to exit")
    assert await again.mount_identity(A) == mp
    assert bindfs_pids(mp) not in ([], [pid])
    await again.unmount_identity(A)


@needs_fuse
async def test_a_start_record_that_is_not_roots_own_is_not_adopted(backend: LocalBackend, base_dir: Path) -> None:
    """A record another user could have written, or one naming another process, is ignored: the view is
    then probed as views of older versions are (and still found up)."""
    mp = await backend.mount_identity(A)
    (pid,) = bindfs_pids(mp)
    await backend.close()
    record = backend.guard_dir(A) / "bindfs.pid"
    pid_s, started, mount_id = record.read_text().split()
    assert int(pid_s) == pid and int(mount_id) == mounts_at(mp)[-1].mount_id
    for text, mode in ((f"{pid} {started} {mount_id}\n", 0o666), (f"{pid} {int(started) + 1} {mount_id}\n", 0o600)):
        record.write_text(text)
        record.chmod(mode)
        again = LocalBackend(root=base_dir / "data", mount_root=base_dir / "mnt")
        os.kill(pid, signal.SIGSTOP)  # the probe of a view nobody follows asks the stopped bindfs: it times out
        try:
            assert again._views._adopt(mp, again.guard_dir(A), mounts_at(mp)[-1]) is None
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await again.mount_identity(A) == mp
        assert bindfs_pids(mp) == [pid]
        await again.close()


@needs_fuse
async def test_a_bindfs_that_exits_just_after_it_came_up_reports_its_exit(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bindfs can answer its first probe and exit a moment later (an option libfuse rejects late): the error
    is its exit, not a mount that reported success, and nothing stays mounted."""
    started = backend._run_bindfs

    async def start_then_exit(identity: Identity, mp: Path) -> None:
        await started(identity, mp)
        [pid] = bindfs_pids(mp)
        os.kill(pid, signal.SIGKILL)
        # gone or a zombie: its exit is done (an empty command line only says it has begun)
        await asyncio.to_thread(wait_until, lambda: not pid_alive(pid), "the killed bindfs to exit", within=10)

    monkeypatch.setattr(backend, "_run_bindfs", start_then_exit)
    with pytest.raises(BackendError, match=r"failed \(bindfs exit status [^)]+\)"):
        await backend.mount_identity(A)
    assert not mounts_at(backend.view_root(A))


@needs_fuse
async def test_a_bindfs_that_dies_while_starting_reports_its_words(backend: LocalBackend, base_dir: Path) -> None:
    """bindfs runs in the foreground, writing to a log in the guard: its own message is the error."""
    bad = LocalBackend(root=base_dir / "data", mount_root=base_dir / "mnt", bindfs_options=["-o", "no_such_opt"])
    with pytest.raises(BackendError, match=r"bindfs exit status \d+\): .*no_such_opt"):
        await bad.mount_identity(A)
    assert not mounts_at(bad.view_root(A))
    log_file = bad.guard_dir(A) / "bindfs.log"
    assert log_file.stat().st_uid == 0 and log_file.stat().st_mode & 0o077 == 0
