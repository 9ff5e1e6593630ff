"""Which open files are a page-cache write away (`is_local_regular_file`), asked of the kernel for the file itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.linux.mounts import is_local_regular_file, mount_id_of, mounts_at, read_mountinfo
from tests.waiting import wait_until

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts file systems")


def _opened(path: Path | str, flags: int = os.O_RDONLY) -> bool:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        return is_local_regular_file(fd)
    finally:
        os.close(fd)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A mount point below tmp_path, unmounted after the test whatever it mounted there."""
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        yield point
    finally:
        while mounts_at(point):
            subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_file_on_the_disk_or_in_memory_is_local(tmp_path: Path) -> None:
    here = tmp_path / "audit.jsonl"
    here.write_bytes(b"")
    fd = os.open(here, os.O_RDONLY | os.O_CLOEXEC)
    try:
        [entry] = [e for e in read_mountinfo() if e.mount_id == mount_id_of(fd)]
    finally:
        os.close(fd)
    assert entry.fstype in ("ext4", "xfs", "btrfs", "tmpfs"), entry  # this machine's disk or memory
    assert _opened(here)


@needs_root
def test_a_file_on_a_tmpfs_is_local_and_one_seen_through_fuse_is_not(tmp_path: Path, mounted: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mounted)], check=True)
    (mounted / "audit.jsonl").write_bytes(b"")
    assert _opened(mounted / "audit.jsonl")

    if shutil.which("bindfs") is None or not Path("/dev/fuse").exists():
        pytest.skip("needs bindfs and /dev/fuse")
    view = tmp_path / "view"
    view.mkdir()
    subprocess.run(["bindfs", str(mounted), str(view)], check=True)
    try:
        wait_until(lambda: mounts_at(view), "the bindfs mount on the view", within=10)
        [entry] = mounts_at(view)
        assert entry.fstype.startswith("fuse")
        assert not _opened(view / "audit.jsonl", os.O_WRONLY)  # the same file, written through a FUSE server
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_pipes_devices_and_kernel_files_are_not(tmp_path: Path) -> None:
    reader, writer = os.pipe()
    try:
        assert not is_local_regular_file(writer)
    finally:
        os.close(reader)
        os.close(writer)
    assert not _opened("/dev/null", os.O_WRONLY)
    assert not _opened("/proc/self/status")  # a regular file, on proc
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not is_local_regular_file(directory)
    finally:
        os.close(directory)
    closed = os.open(tmp_path, os.O_RDONLY)
    os.close(closed)
    assert not is_local_regular_file(closed)  # not open at all: no answer is "no"
