"""Assemble a managed (v2) plugin bundle, or an image root, from this host: no registry needed.

`docker plugin create NAME DIR` wants `DIR/config.json` and `DIR/rootfs/`. The root file system
is copied from the running host: this Python interpreter with its standard library, the
installed distributions fixeduser needs at run time (the closure of its requirements), the
fixeduser package, bindfs, fusermount3 (setuid root), setpriv, umount and a static busybox for
a shell, plus every shared library those programs and the Python extension modules load (found
with `ldd`). The result runs fixeduser exactly as tested on this host.

    python -m fixeduser.admin.bundle DIR [--config deploy/plugin/config.json] [--tar]

`--tar` also writes `DIR/rootfs.tar`, which `docker import` turns into the base image of the
compose deployment (deploy/compose/build-image; deploy/Dockerfile adds the entry point).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Iterable
from pathlib import Path

import fixeduser

__all__ = ["PROGRAMS", "assemble_rootfs", "build_plugin", "runtime_distributions"]

REPO = Path(__file__).resolve().parents[3]  # src/fixeduser/admin/bundle.py
DEFAULT_CONFIG = REPO / "deploy" / "plugin" / "config.json"
SITE = Path("/opt/fixeduser/site-packages")
PROGRAMS = ("bindfs", "fusermount3", "setpriv", "umount", "mount")
# Parts of the standard library a server never imports: keeps the bundle small.
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "config-")
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def runtime_distributions(root: str = "fixeduser") -> list[md.Distribution]:
    """`root`'s installed distribution and the closure of its requirements, with the extras they ask for
    (`psycopg[binary]`: psycopg-binary carries the libpq the shared database needs)."""
    from packaging.requirements import Requirement  # noqa: PLC0415 - build-time only (pip's own dependency)

    seen: dict[str, md.Distribution] = {}
    extras_done: set[tuple[str, str]] = set()
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while pending:
        name, extras = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        wanted = {(key, extra) for extra in {"", *extras}} - extras_done
        if not wanted:
            continue
        extras_done |= wanted
        dist = seen.setdefault(key, md.distribution(name))
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra}) for _, extra in wanted):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return list(seen.values())


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        dest.unlink(missing_ok=True)
        dest.symlink_to(os.readlink(src))
    else:
        shutil.copy2(src, dest)


def _inside(rootfs: Path, path: Path) -> Path:
    return rootfs / path.relative_to("/")


def shared_libraries(binaries: Iterable[Path]) -> set[Path]:
    """Every library (and the dynamic loader) that `ldd` lists for `binaries`."""
    found: set[Path] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            match = _LDD_LINE.search(line)
            if match:
                found.add(Path(match.group(1)))
    return found


def _copy_with_parents_resolved(rootfs: Path, path: Path) -> None:
    """Copy `path` to the same place in `rootfs`, following symlinks the way the loader does."""
    _copy(path, _inside(rootfs, path))
    if path.is_symlink():
        target = path.resolve()
        _copy(target, _inside(rootfs, target))


def assemble_rootfs(rootfs: Path) -> Path:
    """Build the root file system under `rootfs` (replacing it); returns it."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir(parents=True)
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # a merged /usr stays merged
        host = Path("/") / top
        if host.is_symlink():
            (rootfs / os.readlink(host)).mkdir(parents=True, exist_ok=True)
            (rootfs / top).symlink_to(os.readlink(host))
    for folder in ("bin", "etc", "tmp", "proc", "sys", "dev", "run/docker/plugins", "var/lib/fixeduser",
                   "srv/fixeduser/volumes", "etc/fixeduser/policies", "mnt/fixeduser"):  # fmt: skip
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    elves: list[Path] = []

    # the interpreter and its standard library
    python = Path(os.path.realpath(sys.executable))
    _copy(python, _inside(rootfs, python))
    (rootfs / "bin" / "python3").symlink_to(python)
    elves.append(python)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(
        stdlib,
        _inside(rootfs, stdlib),
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d) == stdlib and n.startswith(STDLIB_SKIP)],
    )
    elves += _inside(rootfs, stdlib).rglob("*.so")

    # the run-time distributions, and fixeduser itself (an editable install lists no files)
    site = _inside(rootfs, SITE)
    for dist in runtime_distributions():
        for file in dist.files or []:
            src = Path(str(dist.locate_file(file)))
            skip = ".." in file.parts or "__pycache__" in file.parts or file.name.startswith("__editable__")
            if skip or not src.exists():
                continue
            _copy(src, site / file)
    package = Path(fixeduser.__file__).parent
    shutil.copytree(package, site / "fixeduser", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    elves += site.rglob("*.so")

    # the programs the local backend runs, and a shell
    for name in PROGRAMS:
        found = shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            raise FileNotFoundError(f"{name} is not installed on this host (scripts/setup installs it)")
        path = Path(found)
        _copy(path, rootfs / "bin" / name)  # keeps the setuid bit of fusermount3
        elves.append(path)
    # bindfs is built on libfuse 2, which execs `fusermount`; fusermount3 speaks the same protocol
    (rootfs / "bin" / "fusermount").unlink(missing_ok=True)
    (rootfs / "bin" / "fusermount").symlink_to("fusermount3")
    from fixeduser.linux.binaries import find_static_busybox  # noqa: PLC0415 - only the builder needs it

    shutil.copy2(find_static_busybox(), rootfs / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "id", "mkdir", "rm", "sleep", "ps", "grep"):
        (rootfs / "bin" / applet).symlink_to("busybox")

    # shared libraries for all of the above, at their own paths
    for library in shared_libraries(elves):
        _copy_with_parents_resolved(rootfs, library)

    # fusermount3 needs user names for the uids it mounts for (the host's, also bind-mounted at run time)
    for name in ("passwd", "group"):
        shutil.copy2(Path("/etc") / name, rootfs / "etc" / name)
    (rootfs / "etc" / "fuse.conf").write_text("user_allow_other\n")
    (rootfs / "etc" / "nsswitch.conf").write_text("passwd: files\ngroup: files\n")
    return rootfs


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_tar(rootfs: Path, tar_path: Path) -> Path:
    """`rootfs` as a tar owned by root (for `docker import`)."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(rootfs.iterdir()):
            tar.add(child, arcname=child.name, filter=_as_root)
    return tar_path


def build_plugin(dest: Path, *, config: Path = DEFAULT_CONFIG, image_tar: bool = False) -> Path:
    """`dest/config.json` and `dest/rootfs/`: a `docker plugin create` bundle. Returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    settings = json.loads(config.read_text())
    assemble_rootfs(dest / "rootfs")
    (dest / "config.json").write_text(json.dumps(settings, indent=2) + "\n")
    if image_tar:
        write_tar(dest / "rootfs", dest / "rootfs.tar")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fixeduser.admin.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="bundle folder (gets config.json and rootfs/)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="plugin config.json to use")
    parser.add_argument("--tar", action="store_true", help="also write DEST/rootfs.tar for `docker import`")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("fixeduser.admin.bundle: run as root (the rootfs keeps fusermount3 setuid root)", file=sys.stderr)
        return 2
    build_plugin(args.dest, config=args.config, image_tar=args.tar)
    print(f"bundle ready: {args.dest} (docker plugin create NAME {args.dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
