"""The kernel signals the view liveness is built on: pidfds, process start times, the mount table's change mark."""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
from pathlib import Path

import pytest

from fixeduser.linux.mounts import MountTable, escape, read_mountinfo, top_mount_id, unescape
from fixeduser.linux.processes import follow, follow_child, start_time


def test_start_time_reads_past_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    stat = tmp_path / "42" / "stat"
    stat.parent.mkdir()
    fields = ["S", *[str(n) for n in range(4, 22)], "123456", "0"]
    stat.write_text(f"42 (a) b (c)) {' '.join(fields)}\n")
    assert start_time(42, proc=tmp_path) == 123456
    assert start_time(43, proc=tmp_path) is None


def test_a_followed_child_is_seen_to_exit_and_is_reaped() -> None:
    child = subprocess.Popen(["sleep", "30"])
    followed = follow_child(child)
    try:
        assert not followed.exited()
        assert followed.started == start_time(child.pid)
        child.kill()
        # the kernel makes the pidfd readable when the process has exited: wait for that (a spin of 500
        # sched_yield calls was too short once on a slow machine)
        select.select([followed.pidfd], [], [], 30)
        assert followed.exited()
        assert followed.exit_status() == -9
        assert not Path(f"/proc/{child.pid}").exists()
    finally:
        followed.close()


def test_follow_refuses_a_pid_that_names_another_process() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = start_time(child.pid)
        assert started is not None
        assert follow(child.pid, started + 1) is None  # a later process with the same PID
        same = follow(child.pid, started)
        assert same is not None and not same.exited()
        same.close()
    finally:
        child.kill()
        child.wait()
    assert follow(child.pid, started) is None


def test_escape_is_the_inverse_of_the_kernels_unescape() -> None:
    path = "/a b\\c\td\ne"
    assert escape(path) == "/a\\040b\\134c\\011d\\012e"
    assert unescape(escape(path)) == path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")
def test_the_mount_table_is_read_again_after_each_change_and_only_below_its_root() -> None:
    base = Path(tempfile.mkdtemp(prefix="fixeduser mt-", dir="/tmp"))  # a space: escaped in mountinfo
    inside, outside = base / "in", Path(tempfile.mkdtemp(prefix="fixeduser-mt-out-", dir="/tmp"))
    inside.mkdir()
    table = MountTable(str(base))
    try:
        assert table.entries() == []
        subprocess.run(["mount", "-t", "tmpfs", "fx-in", str(inside)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "fx-out", str(outside)], check=True)
        try:
            assert [(e.mount_point, e.source) for e in table.entries()] == [(str(inside), "fx-in")]
            assert [e.source for e in table.at(inside)] == ["fx-in"]
        finally:
            subprocess.run(["umount", str(inside)], check=True)
            subprocess.run(["umount", str(outside)], check=True)
        assert table.entries() == []
    finally:
        table.close()
        inside.rmdir()
        base.rmdir()
        outside.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")
def test_the_top_mount_id_is_the_mount_tables_topmost_entry_at_the_path(tmp_path: Path) -> None:
    point = tmp_path / "point"
    point.mkdir()
    below = top_mount_id(point)  # the file system tmp_path is on
    subprocess.run(["mount", "-t", "tmpfs", "fx-first", str(point)], check=True)
    try:
        first = top_mount_id(point)
        subprocess.run(["mount", "-t", "tmpfs", "fx-cover", str(point)], check=True)
        try:
            stacked = [entry for entry in read_mountinfo() if entry.mount_point == str(point)]
            assert [e.source for e in stacked] == ["fx-first", "fx-cover"]
            assert first == stacked[0].mount_id != below
            assert top_mount_id(point) == stacked[1].mount_id
        finally:
            subprocess.run(["umount", str(point)], check=True)
        assert top_mount_id(point) == first
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert top_mount_id(point) == below
    with pytest.raises(FileNotFoundError):
        top_mount_id(tmp_path / "absent")
