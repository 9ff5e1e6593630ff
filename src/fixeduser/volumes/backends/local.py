"""Local-directory backend: fixed-user views made with bindfs run *as* the storage identity.

Layout::

    root/                     0755 root:root  (bindfs, running as the identity, must open it)
      <volume>/               owner uid:gid, the mode given at creation (e.g. 0770)
    mount_root/               0711 root:root
      <uid>-<gid>/            0700 root:root + ACL user:<uid>:--x   (the guard)
        view/                 0700 uid:gid; mount point of that identity's view of `root`

A view is mounted with ``setpriv --reuid=U --regid=G --clear-groups bindfs -o allow_other
<root> <mount_root>/U-G/view``.  The bindfs daemon then does every file operation as U:G with no
supplementary groups: files created through the view belong to U:G, and anything U:G may not
do (read a 0600 file of another uid, chown, ...) fails, even for root in a container.

Why the guard: with allow_other and without default_permissions the kernel lets *any* process
into the view and bindfs performs the operation as U. A view reachable by other host users
would hand them U's rights. The mount hides the mount point's own mode, so the protection must
sit one level up: the guard lets only root (docker) and U itself (fusermount checks the mount
point as U) through.

Host preconditions for a FUSE daemon that is not root (checked by `LocalBackend.check`, made by
`prepare_host_for_fuse`): `/dev/fuse` mode 0666, `user_allow_other` in `/etc/fuse.conf`, a
setuid-root `fusermount3`, o+x on `root`, `mount_root` and all their ancestors, and POSIX ACL
support on the filesystem of `mount_root`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import pwd
import re
import secrets
import shutil
import stat
import struct
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from fixeduser.linux.mounts import canonical, mounts_below
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import BackendError, validate_volume_name
from fixeduser.volumes.backends.views import Views, ViewStartError

log = logging.getLogger(__name__)

DEV_FUSE = Path("/dev/fuse")
FUSE_CONF = Path("/etc/fuse.conf")
# bindfs opens its source directory O_RDONLY as the identity: `root` must be world-readable
# (volume *names* are visible to host users; each volume's contents are guarded by its own mode).
ROOT_DIR_MODE = 0o755
MOUNT_ROOT_MODE = 0o711
GUARD_DIR_MODE = 0o700
VIEW_DIR_MODE = 0o700
VIEW_DIR_NAME = "view"
PATHS_KEPT = 4096  # identities' and volumes' paths kept built (the most recently used)
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 30.0
# A clean, predictable environment for the helpers: English messages, no inherited surprises.
_HELPER_ENV_KEYS = ("PATH",)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_GUARD_NAME_RE = re.compile(r"^([0-9]+)-([0-9]+)$")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _fuse_conf_allows_other(fuse_conf: Path) -> bool:
    try:
        text = fuse_conf.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    return any(line.strip() == "user_allow_other" for line in text.splitlines())


def prepare_host_for_fuse(*, dev_fuse: Path = DEV_FUSE, fuse_conf: Path = FUSE_CONF) -> list[str]:
    """Let non-root FUSE daemons mount with allow_other; returns what was changed (for logs).

    Makes `/dev/fuse` mode 0666 and appends `user_allow_other` to `/etc/fuse.conf` if it is
    missing. Setup scripts call this as root; `/dev/fuse`'s mode is reset at boot (devtmpfs), so
    run it at every boot (or add a udev rule: ``KERNEL=="fuse", MODE="0666"``).
    """
    changes: list[str] = []
    try:
        st = os.stat(dev_fuse)
    except FileNotFoundError:
        raise BackendError(f"{dev_fuse} does not exist: load the fuse kernel module (modprobe fuse)") from None
    if stat.S_IMODE(st.st_mode) & 0o666 != 0o666:
        os.chmod(dev_fuse, stat.S_IMODE(st.st_mode) | 0o666)
        changes.append(f"chmod 0666 {dev_fuse}")
    if not _fuse_conf_allows_other(fuse_conf):
        existing = fuse_conf.read_text(encoding="utf-8") if fuse_conf.exists() else ""
        prefix = "" if not existing or existing.endswith("\n") else "\n"
        with fuse_conf.open("a", encoding="utf-8") as f:
            f.write(f"{prefix}user_allow_other\n")
        changes.append(f"added user_allow_other to {fuse_conf}")
    return changes


def traversal_problems(path: Path) -> list[str]:
    """Problems that stop a non-root uid from traversing `path` (checks every ancestor, o+x)."""
    problems: list[str] = []
    resolved = Path(os.path.realpath(path))
    for p in [*reversed(resolved.parents), resolved]:
        try:
            st = os.stat(p)
        except OSError as exc:
            problems.append(f"{p}: cannot stat ({exc.strerror})")
            break
        if not stat.S_ISDIR(st.st_mode):
            problems.append(f"{p} is not a directory")
            break
        if not st.st_mode & stat.S_IXOTH:
            problems.append(
                f"{p} (mode {stat.S_IMODE(st.st_mode):04o}) is not traversable by other users: "
                f"bindfs runs as the storage identity and needs o+x on it (chmod o+x {p})"
            )
    return problems


def host_problems(
    *,
    bindfs: str = "bindfs",
    setpriv: str = "setpriv",
    fusermount: str = "fusermount3",
    dev_fuse: Path = DEV_FUSE,
    fuse_conf: Path = FUSE_CONF,
) -> list[str]:
    """Host settings missing for bindfs as a non-root uid with allow_other (empty: all fine)."""
    problems: list[str] = []
    if shutil.which(bindfs) is None:
        problems.append(f"{bindfs!r} not found: install bindfs (apt-get install bindfs)")
    if shutil.which(setpriv) is None:
        problems.append(f"{setpriv!r} not found: install util-linux (provides setpriv)")
    fm = shutil.which(fusermount)
    if fm is None:
        problems.append(f"{fusermount!r} not found: install fuse3 (apt-get install fuse3)")
    else:
        st = os.stat(fm)
        if st.st_uid != 0 or not st.st_mode & stat.S_ISUID:
            problems.append(f"{fm} is not setuid root: non-root FUSE mounts need it (chmod u+s {fm})")
    try:
        st = os.stat(dev_fuse)
    except FileNotFoundError:
        problems.append(f"{dev_fuse} does not exist: load the fuse kernel module (modprobe fuse)")
    else:
        if stat.S_IMODE(st.st_mode) & 0o666 != 0o666:
            problems.append(
                f"{dev_fuse} is mode {stat.S_IMODE(st.st_mode):04o}: a FUSE daemon running as a "
                f"non-root uid needs 0666 (chmod 666 {dev_fuse}, or run prepare_host_for_fuse())"
            )
    if not _fuse_conf_allows_other(fuse_conf):
        problems.append(
            f"{fuse_conf} lacks a 'user_allow_other' line: non-root FUSE mounts cannot use "
            "allow_other without it (add the line, or run prepare_host_for_fuse())"
        )
    return problems


def _ensure_root_dir(path: Path, mode: int) -> None:
    """Create `path` (and missing ancestors, 0755) and make it root-owned with `mode`."""
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        if d != path:
            os.chmod(d, 0o755)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise BackendError(f"{path} exists and is not a directory: move it away or pick another path")
    if st.st_uid != 0 or st.st_gid != 0:
        os.chown(path, 0, 0, follow_symlinks=False)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _ensure_dir(path: Path, *, uid: int, gid: int, mode: int) -> None:
    """A real directory (not a symlink) at `path` with exactly this owner and mode."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, _O_DIR)
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


# POSIX ACL xattr format (linux/posix_acl_xattr.h): version 2, then (tag u16, perm u16, id u32).
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def _set_traverse_acl(path: Path, uid: int) -> None:
    """ACL `u::rwx, u:<uid>:--x, g::---, m::--x, o::---` on `path` (shows as mode 0710)."""
    entries = [
        (_ACL_USER_OBJ, 7, _ACL_UNDEFINED_ID),
        (_ACL_USER, 1, uid),
        (_ACL_GROUP_OBJ, 0, _ACL_UNDEFINED_ID),
        (_ACL_MASK, 1, _ACL_UNDEFINED_ID),
        (_ACL_OTHER, 0, _ACL_UNDEFINED_ID),
    ]
    data = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)
    with contextlib.suppress(OSError):
        if os.getxattr(path, _ACL_XATTR, follow_symlinks=False) == data:
            return
    os.setxattr(path, _ACL_XATTR, data, follow_symlinks=False)


def _acl_problem(mount_root: Path) -> str | None:
    """None if POSIX ACLs can be set below `mount_root`, else what to do about it."""
    probe = mount_root / f".acl-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _ensure_dir(probe, uid=0, gid=0, mode=GUARD_DIR_MODE)
        _set_traverse_acl(probe, 65534)
    except OSError as exc:
        return (
            f"cannot set a POSIX ACL below {mount_root} ({exc.strerror}): put mount_root on a "
            "filesystem with ACL support (ext4, xfs, btrfs, tmpfs); the per-identity guard "
            "directories need one"
        )
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)
    return None


def _write_problem(root: Path) -> str | None:
    """None if a folder can be made (and removed) in `root`, else why not (e.g. read-only storage)."""
    probe = root / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.mkdir(probe, 0o700)
    except OSError as exc:
        return f"cannot write in {root} ({exc.strerror}): new volumes would fail; check the storage"
    with contextlib.suppress(OSError):
        os.rmdir(probe)
    return None


def _require_passwd_entry(identity: Identity) -> None:
    """fusermount3 refuses to mount for a uid without a user name ("could not determine username")."""
    try:
        pwd.getpwuid(identity.uid)
    except KeyError:
        raise BackendError(
            f"uid {identity.uid} of identity {identity} has no entry in the host's user database: "
            "fusermount3 needs one to mount its view; add one, e.g. `useradd --system "
            f"--no-create-home --shell /usr/sbin/nologin --uid {identity.uid} fxu{identity.uid}`"
        ) from None


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _start_failed(identity: Identity, mp: Path, exc: ViewStartError) -> BackendError:
    return BackendError(f"mounting the fixed-user view of {identity} on {mp} failed ({exc.reason}): {exc.output}")


class LocalBackend:
    """Volumes are directories under `root`; each identity gets one bindfs view of `root`."""

    name: str = "local"
    scope: Literal["local", "global"] = "local"

    def __init__(
        self,
        *,
        root: Path,
        mount_root: Path,
        bindfs: str = "bindfs",
        bindfs_options: Sequence[str] = (),
        setpriv: str = "setpriv",
        fusermount: str = "fusermount3",
        dev_fuse: Path = DEV_FUSE,
        fuse_conf: Path = FUSE_CONF,
        mount_timeout: float = MOUNT_TIMEOUT,
        large_writes: bool = True,
    ) -> None:
        if not Path(root).is_absolute() or not Path(mount_root).is_absolute():
            raise BackendError(f"root ({root}) and mount_root ({mount_root}) must be absolute paths")
        self.root = Path(canonical(root))
        self.mount_root = Path(canonical(mount_root))
        r, m = str(self.root), str(self.mount_root)
        if _within(r, m) or _within(m, r):
            raise BackendError(
                f"root ({r}) and mount_root ({m}) must not contain each other: the views would "
                "show themselves; use two separate directories"
            )
        self.bindfs = bindfs
        self.bindfs_options = tuple(bindfs_options)
        # libfuse 2 (Debian's bindfs) splits writes into 4 KiB requests unless asked for big ones:
        # three times the sequential write speed (bench/NOTES.md#bindfs-large-writes). Only the
        # request size changes (no caching), so it is sound. libfuse 3 always writes large and
        # rejects the option. Set by the check.
        self.large_writes = large_writes
        self._fuse_major: int | None = None
        self.setpriv = setpriv
        self.fusermount = fusermount
        self.dev_fuse = dev_fuse
        self.fuse_conf = fuse_conf
        self.mount_timeout = mount_timeout
        self._checked = False
        self._check_lock = asyncio.Lock()
        self._identity_locks: dict[str, asyncio.Lock] = {}
        self._volume_locks: dict[str, asyncio.Lock] = {}
        self._views = Views(self.mount_root)

    # ------------------------------------------------------------------ preconditions

    async def check(self) -> None:
        """Create `root`/`mount_root` if needed and verify the host; BackendError lists problems.

        Once a check has passed, a vanished `root` is a problem (not created again) and `root` must
        stay writable: this is also the health check while serving."""
        async with self._check_lock:
            await asyncio.to_thread(self._check_sync)
            self._checked = True

    def _check_sync(self) -> None:
        if not self._checked:  # once: this check also runs at every /healthz
            self._fuse_major = bindfs_fuse_major(self.bindfs)
        problems = host_problems(
            bindfs=self.bindfs,
            setpriv=self.setpriv,
            fusermount=self.fusermount,
            dev_fuse=self.dev_fuse,
            fuse_conf=self.fuse_conf,
        )
        for d, mode in ((self.root, ROOT_DIR_MODE), (self.mount_root, MOUNT_ROOT_MODE)):
            if self._checked and d == self.root and not os.path.lexists(d):
                # created at start; gone now means the storage went away: an empty stand-in would hide it
                problems.append(f"{d} (the volumes' storage) is gone since the plugin started: restore or remount it")
                continue
            try:
                _ensure_root_dir(d, mode)
            except OSError as exc:
                problems.append(f"cannot create {d}: {exc.strerror}")
                continue
            problems.extend(p for p in traversal_problems(d) if p not in problems)
        if not problems:
            problems.extend(filter(None, [_write_problem(self.root)]))
        if not problems:
            problem = _acl_problem(self.mount_root)
            if problem:
                problems.append(problem)
        if problems:
            raise BackendError(
                "the local fixed-user volume backend cannot work on this host:\n  - " + "\n  - ".join(problems)
            )

    # ------------------------------------------------------------------ volumes

    def _volume_lock(self, volume: str) -> asyncio.Lock:
        return self._volume_locks.setdefault(volume, asyncio.Lock())

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        """Create `root/<volume>` owned by `owner` with `mode`; an existing one is kept as is."""
        validate_volume_name(volume)
        if not 0 <= mode <= 0o7777:
            raise BackendError(f"invalid mode {mode:#o} for volume {volume!r}: use 0000-7777")
        async with self._volume_lock(volume):
            await asyncio.to_thread(self._create_sync, volume, owner, mode)

    def _create_sync(self, volume: str, owner: Identity, mode: int) -> None:
        try:
            _ensure_root_dir(self.root, ROOT_DIR_MODE)
            root_fd = os.open(self.root, _O_DIR)
        except OSError as exc:
            raise BackendError(f"cannot open volume storage {self.root}: {exc.strerror}") from exc
        try:
            try:
                # Restrictive first, then chown, then chmod: never visible with the wrong owner.
                os.mkdir(volume, 0o700, dir_fd=root_fd)
            except FileExistsError:
                st = os.lstat(volume, dir_fd=root_fd)
                if not stat.S_ISDIR(st.st_mode):
                    raise BackendError(
                        f"{self.root / volume} exists and is not a directory: remove it or choose another volume name"
                    ) from None
                log.info("volume %s already exists in %s: kept as it is", volume, self.root)
                return
            vfd = os.open(volume, _O_DIR, dir_fd=root_fd)
            try:
                os.fchown(vfd, owner.uid, owner.gid)
                os.fchmod(vfd, mode)
            finally:
                os.close(vfd)
        except OSError as exc:
            raise BackendError(f"cannot create volume {volume!r} in {self.root}: {exc.strerror}") from exc
        finally:
            os.close(root_fd)

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        """Set the owner and mode of `root/<volume>` (never following symlinks); False if skipped."""
        validate_volume_name(volume)
        async with self._volume_lock(volume):
            # Three syscalls on a local folder, after every Unmount: on the event loop they cost less than
            # the hop to a thread and back (bench/NOTES.md#top-folder). The Quobyte backend keeps them off it.
            return self._set_top_sync(volume, owner, mode, only_if_empty)

    def _set_top_sync(self, volume: str, owner: Identity, mode: int, only_if_empty: bool) -> bool:
        try:
            vfd = os.open(self.root / volume, _O_DIR | os.O_NOFOLLOW)
        except OSError as exc:
            raise BackendError(f"cannot open volume {volume} in {self.root}: {exc.strerror}") from exc
        try:
            if only_if_empty and _has_entries(vfd):
                return False
            os.fchown(vfd, owner.uid, owner.gid)
            os.fchmod(vfd, mode)
            return True
        finally:
            os.close(vfd)

    async def volume_exists(self, volume: str) -> bool:
        """True if `root/<volume>` is a directory (a symlink there does not count)."""
        validate_volume_name(volume)

        def probe() -> bool:
            try:
                return stat.S_ISDIR(os.lstat(self.root / volume).st_mode)
            except FileNotFoundError:
                return False

        return await asyncio.to_thread(probe)

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        """Without `purge` the data stays; with it, delete `root/<volume>` (no symlink/mount crossing)."""
        validate_volume_name(volume)
        if not purge:
            log.info("volume %s removed without purge: data kept in %s", volume, self.root / volume)
            return
        async with self._volume_lock(volume):
            await asyncio.to_thread(self._purge_sync, volume)

    def _purge_sync(self, volume: str) -> None:
        path = self.root / volume
        nested = mounts_below(path)
        if nested:
            raise BackendError(
                f"cannot purge volume {volume!r}: {nested[0].mount_point} is a mount point inside "
                "it; unmount it first (data was left untouched)"
            )
        try:
            root_fd = os.open(self.root, _O_DIR)
        except FileNotFoundError:
            return
        try:
            try:
                st = os.lstat(volume, dir_fd=root_fd)
            except FileNotFoundError:
                return
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(volume, dir_fd=root_fd)  # a symlink or file: remove it, not its target
                return
            root_dev = os.fstat(root_fd).st_dev
            if st.st_dev != root_dev:
                raise BackendError(
                    f"cannot purge volume {volume!r}: {path} is on another filesystem "
                    "(a mount point); unmount it first (data was left untouched)"
                )
            _remove_tree_at(root_fd, volume, root_dev)
        except OSError as exc:
            raise BackendError(
                f"purging volume {volume!r} failed: {exc.strerror} ({exc.filename or path}); what is left is in {path}"
            ) from exc
        finally:
            os.close(root_fd)

    # ------------------------------------------------------------------ identity views

    def _identity_lock(self, identity: Identity) -> asyncio.Lock:
        return self._identity_locks.setdefault(identity.key, asyncio.Lock())

    def guard_dir(self, identity: Identity) -> Path:
        """`mount_root/<uid>-<gid>`: only root and the identity itself may pass it."""
        return _identity_paths(self.mount_root, identity.uid, identity.gid)[0]

    def view_root(self, identity: Identity) -> Path:
        """Mount point of the view of `identity`: `mount_root/<uid>-<gid>/view`."""
        return _identity_paths(self.mount_root, identity.uid, identity.gid)[1]

    def volume_path(self, identity: Identity, volume: str) -> Path:
        """`mount_root/<uid>-<gid>/view/<volume>`: what docker bind-mounts into containers."""
        return _volume_path(self.view_root(identity), volume)

    async def mount_identity(self, identity: Identity) -> Path:
        """Mount the view of `identity` unless it is up; a stale one is lazily unmounted first."""
        if identity.uid == 0 or identity.gid == 0:
            raise BackendError(f"identity {identity} is root: a fixed identity must not be root")
        if not self._checked:
            async with self._check_lock:
                if not self._checked:
                    await asyncio.to_thread(self._check_sync)
                    self._checked = True
        mp = self.view_root(identity)
        async with self._identity_lock(identity):
            state = await self._views.state(mp, self.guard_dir(identity))
            if state == "up":
                return mp
            if state == "stale":
                log.warning("view %s of %s is stale: unmounting it lazily and remounting", mp, identity)
                await self._unmount_all(mp, lazy_only=True)
            await asyncio.to_thread(_require_passwd_entry, identity)
            await asyncio.to_thread(self._prepare_mountpoint, identity, mp)
            await self._run_bindfs(identity, mp)
            if await self._views.state(mp, self.guard_dir(identity)) != "up":
                # bindfs can answer its first probe and still exit on an option libfuse rejects a moment later
                if (ended := self._views.ended(mp, self.guard_dir(identity))) is not None:
                    await self._unmount_all(mp, lazy_only=True)
                    raise _start_failed(identity, mp, ended)
                raise BackendError(
                    f"bindfs reported success but {mp} is not a working mount point for "
                    f"{identity}; check the kernel log (dmesg) and the FUSE setup"
                )
            log.info("mounted view of %s on %s", identity, mp)
            return mp

    def _prepare_mountpoint(self, identity: Identity, mp: Path) -> None:
        """Make the guard (root 0700 + ACL u:<uid>:--x) and the mount point (0700 uid:gid)."""
        _ensure_root_dir(self.mount_root, MOUNT_ROOT_MODE)
        guard = self.guard_dir(identity)
        try:
            _ensure_dir(guard, uid=0, gid=0, mode=GUARD_DIR_MODE)
            _set_traverse_acl(guard, identity.uid)
            # fusermount3 accepts a mount point the unprivileged mounter owns.
            _ensure_dir(mp, uid=identity.uid, gid=identity.gid, mode=VIEW_DIR_MODE)
        except OSError as exc:
            raise BackendError(f"cannot prepare the mount point {mp} for {identity}: {exc.strerror}") from exc

    def bindfs_argv(self, identity: Identity) -> list[str]:
        """The command that mounts the view of `identity` (bindfs runs as that identity)."""
        return [
            self.setpriv,
            f"--reuid={identity.uid}",
            f"--regid={identity.gid}",
            "--clear-groups",
            self.bindfs,
            "-o",
            "allow_other",
            # Ownership is fixed by the view, so chown is meaningless: ignore it instead of failing,
            # as the daemon chowns a volume's top folder when it copies image content into it.
            "--chown-ignore",
            "--chgrp-ignore",
            *(("-o", "big_writes") if self.large_writes and self._fuse_major == 2 else ()),
            *self.bindfs_options,
            "-f",  # in the foreground: the plugin follows the process that serves the view (views.py)
            str(self.root),
            str(self.view_root(identity)),
        ]

    async def _run_bindfs(self, identity: Identity, mp: Path) -> None:
        argv = self.bindfs_argv(identity)
        try:
            await self._views.start(argv, _helper_env(), mp, self.guard_dir(identity), self.mount_timeout)
        except ViewStartError as exc:
            await self._unmount_all(mp, lazy_only=True)
            raise _start_failed(identity, mp, exc) from None
        except OSError as exc:
            raise BackendError(f"cannot run {argv[0]}: {exc.strerror}; is util-linux installed?") from exc

    async def unmount_identity(self, identity: Identity) -> None:
        """Unmount the view of `identity` (lazily if busy or stale); no-op if not mounted."""
        mp = self.view_root(identity)
        async with self._identity_lock(identity):
            self._views.forget(mp)
            await self._unmount_all(mp, lazy_only=False)

    async def _unmount_all(self, mp: Path, *, lazy_only: bool) -> None:
        """Unmount everything stacked on `mp`; `fusermount3 -u`, then `umount -l` as fallback."""
        errors: list[str] = []
        for _ in range(16):  # bound the loop: each round removes one stacked mount
            if not self._views.mounts_at(mp):
                return
            if not lazy_only:
                try:
                    async with asyncio.timeout(UNMOUNT_TIMEOUT):
                        rc, err = await _run([self.fusermount, "-u", str(mp)])
                except (TimeoutError, OSError) as exc:
                    rc, err = -1, str(exc)
                if rc == 0:
                    continue
                errors.append(err)
            try:
                async with asyncio.timeout(UNMOUNT_TIMEOUT):
                    rc, err = await _run(["umount", "-l", str(mp)])
            except (TimeoutError, OSError) as exc:
                rc, err = -1, str(exc)
            if rc != 0:
                errors.append(err)
                if self._views.mounts_at(mp):
                    raise BackendError(f"cannot unmount {mp}: {'; '.join(e for e in errors if e)}")
        raise BackendError(f"cannot unmount {mp}: still mounted after repeated unmounts")

    async def mounted_identities(self) -> list[str]:
        """Keys (`uid:gid`) of the views now mounted under `mount_root` (stale ones included)."""
        keys: set[str] = set()
        for entry in self._views.mounted():
            guard, name = os.path.split(entry.mount_point)
            head, guard_name = os.path.split(guard)
            m = _GUARD_NAME_RE.match(guard_name)
            if name == VIEW_DIR_NAME and head == str(self.mount_root) and m and entry.fstype.startswith("fuse"):
                keys.add(f"{int(m.group(1))}:{int(m.group(2))}")
        return sorted(keys)

    async def close(self) -> None:
        """Stop following the views; they stay mounted so containers keep working across restarts."""
        self._views.close()


def _has_entries(dir_fd: int) -> bool:
    with os.scandir(dir_fd) as entries:
        return next(entries, None) is not None


def _remove_tree_at(parent_fd: int, name: str, dev: int) -> None:
    """Delete directory `name` under `parent_fd` and all it holds, via fds only.

    Never follows symlinks (they are unlinked), refuses to enter another filesystem, and checks
    each opened directory is the one that was stat-ed (no swap-in-a-symlink races). Iterative, so
    deep trees do not hit Python's recursion limit.
    """
    top_fd = _open_dir_checked(parent_fd, name, dev)
    # Each frame: (fd of a directory, its name in the parent, the parent's fd).
    stack: list[tuple[int, str, int]] = [(top_fd, name, parent_fd)]
    try:
        while stack:
            fd, _, _ = stack[-1]
            child: tuple[int, str, int] | None = None
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        st = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        child = (_open_dir_checked(fd, entry.name, dev, st), entry.name, fd)
                        break
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=fd)
            if child is not None:
                stack.append(child)
                continue
            fd, dname, pfd = stack.pop()
            os.close(fd)
            os.rmdir(dname, dir_fd=pfd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _open_dir_checked(parent_fd: int, name: str, dev: int, expected: os.stat_result | None = None) -> int:
    fd = os.open(name, _O_DIR, dir_fd=parent_fd)
    try:
        st = os.fstat(fd)
        if st.st_dev != dev:
            raise BackendError(
                f"refusing to delete across a filesystem boundary at {name!r}: a mount inside "
                "the volume; unmount it first"
            )
        if expected is not None and (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            raise OSError(errno.EAGAIN, "directory changed while being deleted", name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def bindfs_fuse_major(bindfs: str) -> int | None:
    """The major version of the libfuse bindfs is linked with (`bindfs --fuse-version`), if it says."""
    try:
        out = subprocess.run([bindfs, "--fuse-version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"linked version (\d+)\.", out.stdout + out.stderr)
    return int(match.group(1)) if match else None


def _helper_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _HELPER_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env["LC_ALL"] = "C"
    return env


async def _run(argv: Sequence[str]) -> tuple[int, str]:
    """Run a helper without blocking the loop; returns (exit status, stripped stderr+stdout).

    The helpers daemonize (bindfs) after detaching their stdio, so EOF on the pipes means the
    foreground process is done. Callers bound it with `asyncio.timeout`; on cancellation or
    timeout the process is killed and reaped before the exception propagates.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd="/",
        env=_helper_env(),
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        raise
    text = (err.decode(errors="replace") + out.decode(errors="replace")).strip()
    return (proc.returncode if proc.returncode is not None else -1), text


# A Mount asks for an identity's paths five times, and joining them was a fifth of its CPU time when the plugin
# had been idle (bench/NOTES.md#view-paths): they are built once. A bad volume name raises, and is not kept.
@functools.lru_cache(maxsize=PATHS_KEPT)
def _identity_paths(mount_root: Path, uid: int, gid: int) -> tuple[Path, Path]:
    guard = mount_root / f"{uid}-{gid}"
    return guard, guard / VIEW_DIR_NAME


@functools.lru_cache(maxsize=PATHS_KEPT)
def _volume_path(view_root: Path, volume: str) -> Path:
    return view_root / validate_volume_name(volume)
