"""Part 4: file I/O through the fixed-user bindfs view against the same directory used directly,
for several bindfs option sets (LocalBackend's `bindfs_options`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from bench.report import Chart, Part, Table, Target
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import BackendError
from fixeduser.volumes.backends.local import LocalBackend, prepare_host_for_fuse

IDENTITY = Identity(uid=10001, gid=10000, user="10001", group="10000")
VOLUME = "iobench"
MIB = 1 << 20
# "default" is what fixeduser runs: with libfuse 2 (Debian's bindfs) that includes -o big_writes.
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "without big_writes": (),
    "multithreaded": ("--multithreaded",),
    "attr/entry timeout 10 s": ("-o", "attr_timeout=10,entry_timeout=10"),
    "kernel_cache": ("-o", "kernel_cache"),
    "multithreaded + timeouts 10 s": ("--multithreaded", "-o", "attr_timeout=10,entry_timeout=10"),
}
WITHOUT_LARGE_WRITES = {"without big_writes"}
SOUNDNESS = {
    "default": (
        "sound: every operation is done by bindfs as the identity. With libfuse 2 it runs with -o big_writes, "
        "which only lets the kernel send writes larger than 4 KiB per request (no caching): see the sequential "
        "write column against 'without big_writes'. libfuse 3 always writes large and has no such option."
    ),
    "without big_writes": "sound; what fixeduser ran before it asked libfuse 2 for big writes.",
    "multithreaded": (
        "sound here: the race in bindfs' BUGS section is about bindfs fixing owner/permissions of new files "
        "after creating them (--create-for-*, --perms, --create-with-perms), when another process can briefly "
        "see the unfixed file; fixeduser's views use none of those (bindfs runs as the identity, files are "
        "created as it directly), so there is nothing to race."
    ),
    "attr/entry timeout 10 s": (
        "sound for access control (the view has no default_permissions, so the kernel never decides access "
        "from cached attributes; bindfs does each operation as the identity), and the cache is per mount, "
        "so per identity. Cost: coherence. A change made through another identity's view or on the backing "
        "directory (chmod, new/removed names) can show up to 10 s late in this view."
    ),
    "kernel_cache": (
        "not sound for shared volumes: file contents stay cached across opens, so a file rewritten through "
        "another identity's view (or on the backing store) can be read stale through this one."
    ),
    "multithreaded + timeouts 10 s": "as its two parts.",
}


def _seq_write(d: Path, total: int) -> float:
    block = os.urandom(MIB)
    t = time.perf_counter()
    fd = os.open(d / "seq.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(total // MIB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return total / MIB / (time.perf_counter() - t)


def _seq_read(d: Path, total: int) -> float:
    t = time.perf_counter()
    fd = os.open(d / "seq.bin", os.O_RDONLY)
    try:
        while os.read(fd, MIB):
            pass
    finally:
        os.close(fd)
    return total / MIB / (time.perf_counter() - t)


def _small_files(d: Path, n: int) -> dict[str, float]:
    sub = d / "small"
    sub.mkdir()
    data = b"x" * 4096
    t = time.perf_counter()
    for i in range(n):
        fd = os.open(sub / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    created = time.perf_counter()
    for i in range(n):
        os.stat(sub / f"f{i}")
    statted = time.perf_counter()
    for i in range(n):
        os.unlink(sub / f"f{i}")
    deleted = time.perf_counter()
    sub.rmdir()
    return {"create/s": n / (created - t), "stat/s": n / (statted - created), "delete/s": n / (deleted - statted)}


def _metadata(d: Path, dirs: int, files: int) -> float:
    """mkdir a tree, walk and stat it twice, chmod and rename everything, remove it: operations/s."""
    root = d / "meta"
    ops = 0
    t = time.perf_counter()
    root.mkdir()
    for i in range(dirs):
        (root / f"d{i}").mkdir()
        for j in range(files):
            (root / f"d{i}" / f"e{j}").touch()
        ops += 1 + files
    for _ in range(2):
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                os.lstat(os.path.join(dirpath, name))
                ops += 1
            ops += 1
    for i in range(dirs):
        for j in range(files):
            p = root / f"d{i}" / f"e{j}"
            os.chmod(p, 0o600)
            os.rename(p, root / f"d{i}" / f"r{j}")
            ops += 2
    shutil.rmtree(root)
    ops += dirs * (files + 1) + 1
    return ops / (time.perf_counter() - t)


def _workload(d: Path, quick: bool) -> dict[str, float]:
    total = (32 if quick else 256) * MIB
    out = {"seq write MiB/s": _seq_write(d, total), "seq read MiB/s": _seq_read(d, total)}
    os.unlink(d / "seq.bin")
    out.update(_small_files(d, 300 if quick else 3000))
    out["metadata ops/s"] = _metadata(d, 10 if quick else 40, 20 if quick else 50)
    return out


async def run(base: Path, *, quick: bool) -> Part:
    part = Part(
        key="io",
        title="4. Fixed-user I/O through the bindfs view",
        measures=(
            "The same workload on a volume directory used directly (as root, like the daemon) and through "
            f"fixeduser's bindfs view of identity {IDENTITY.uid}:{IDENTITY.gid} (bindfs running as that identity, "
            "mounted by LocalBackend with each option set). Sequential write (1 MiB blocks, then fsync) and "
            "read back (warm page cache: caches are not dropped, other work runs on this machine); 4 KiB "
            "small files created, stat-ed, deleted; a metadata mix (mkdir, create, walk+lstat twice, chmod, "
            "rename, rm -r). Ratio = view / direct (1.0 = no cost; higher is better for all columns)."
        ),
    )
    prepare_host_for_fuse()
    root, mount_root = base / "root", base / "mnt"
    backend_default = await _run_direct(root, mount_root, quick)
    table = Table(
        key="io_throughput",
        title="Throughput through the view (direct = same directory, no bindfs)",
        columns=[
            "variant",
            "seq write MiB/s",
            "seq read MiB/s",
            "create/s",
            "stat/s",
            "delete/s",
            "metadata ops/s",
            "metadata ratio",
            "create ratio",
            "read ratio",
        ],
        chart=Chart(x="variant", ys=["metadata ratio", "create ratio", "read ratio"], ylabel="view / direct"),
    )
    ref = backend_default
    table.rows.append(
        [
            "direct",
            *(
                ref[k]
                for k in ("seq write MiB/s", "seq read MiB/s", "create/s", "stat/s", "delete/s", "metadata ops/s")
            ),
            1.0,
            1.0,
            1.0,
        ]
    )
    for name, options in VARIANTS.items():
        backend = LocalBackend(
            root=root, mount_root=mount_root, bindfs_options=options, large_writes=name not in WITHOUT_LARGE_WRITES
        )
        try:
            await backend.check()
            view = await backend.mount_identity(IDENTITY)
        except BackendError as exc:
            part.notes.append(f"{name}: bindfs refused the options: {str(exc).splitlines()[0][:200]}")
            continue
        try:
            r = await asyncio.to_thread(_workload, view / VOLUME, quick)
        finally:
            await backend.unmount_identity(IDENTITY)
        table.rows.append(
            [
                name,
                *(
                    r[k]
                    for k in ("seq write MiB/s", "seq read MiB/s", "create/s", "stat/s", "delete/s", "metadata ops/s")
                ),
                r["metadata ops/s"] / ref["metadata ops/s"],
                r["create/s"] / ref["create/s"],
                r["seq read MiB/s"] / ref["seq read MiB/s"],
            ]
        )
        part.data[name] = r
    part.data["direct"] = ref
    part.tables.append(table)
    measured = {row[0]: row for row in table.rows}
    sound = [
        n
        for n in (
            "default",
            "without big_writes",
            "multithreaded",
            "attr/entry timeout 10 s",
            "multithreaded + timeouts 10 s",
        )
        if n in measured
    ]
    best = max(sound, key=lambda n: measured[n][7] + measured[n][8]) if sound else None
    if best:
        part.notes.append(
            f"fastest sound option set in this run (metadata + create ratio): **{best}** "
            f"({' '.join(VARIANTS[best]) or 'no extra options'})."
        )
    for name, text in SOUNDNESS.items():
        part.notes.append(f"{name}: {text}")
    default = measured.get("default")
    if default:
        part.targets.append(
            Target("metadata ops through the default view, ratio to direct", "report", f"{default[7]:.2f}x", None)
        )
    return part


async def _run_direct(root: Path, mount_root: Path, quick: bool) -> dict[str, float]:
    backend = LocalBackend(root=root, mount_root=mount_root)
    await backend.check()
    await backend.create_volume(VOLUME, owner=IDENTITY, mode=0o770)
    return await asyncio.to_thread(_workload, root / VOLUME, quick)


def main() -> None:
    from bench.common import work_dir  # noqa: PLC0415
    from bench.report import print_part  # noqa: PLC0415

    with work_dir() as tmp:
        print_part(asyncio.run(run(tmp, quick=True)))


if __name__ == "__main__":
    main()
