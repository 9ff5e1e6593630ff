"""The audit log on a real filesystem that fills up (a 256 KiB tmpfs, root only): bounded memory,
whole lines only, the failure in problems(), and writing resumes by itself once space returns."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.authz.audit import AUDIT_LINE, DROPPED_ACTION, JsonLineAuditor
from tests.authz.test_audit_backlog import record
from tests.waiting import until

MAX_BYTES = 200_000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    with path.open("wb", buffering=0) as filler:
        while True:
            try:
                filler.write(b"f" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):  # the last page or so
            while True:
                filler.write(b"f" * 64)


async def test_a_full_filesystem_costs_bounded_memory_and_audit_resumes_by_itself(small_fs: Path) -> None:
    log = small_fs / "audit.jsonl"
    auditor = JsonLineAuditor(log, flush_interval=0.01, retry_max=0.05, max_bytes=MAX_BYTES)
    writer = asyncio.create_task(auditor.run())
    try:
        for i in range(10):
            auditor.record(record(i))
        await until(lambda: auditor.backlog_lines == 0)
        fill(small_fs / "filler")
        bad = "/containers/" + "x" * (1 << 20)  # a 1 MiB value in every request
        for i in range(10, 2010):
            auditor.record(record(i, path=bad))
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # the writer tries meanwhile
        assert auditor.backlog_bytes <= MAX_BYTES
        assert auditor.dropped > 1000
        await until(lambda: auditor.failing_since is not None)
        [problem] = auditor.problems()
        assert "No space left on device" in problem and str(log) in problem
        for line in log.read_bytes().splitlines(keepends=True):  # whole lines only, even mid-failure
            assert line.endswith(b"\n")
            AUDIT_LINE.validate_json(line)

        (small_fs / "filler").unlink()  # space returns
        await until(lambda: auditor.failing_since is None and auditor.backlog_lines == 0)
        auditor.record(record(2010))
        await until(lambda: auditor.backlog_lines == 0)
        assert auditor.problems() == []
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await auditor.close()
    lines = [AUDIT_LINE.validate_json(line) for line in log.read_bytes().splitlines()]
    users = [r.user for r in lines if r.action != DROPPED_ACTION]
    [gap] = [r for r in lines if r.action == DROPPED_ACTION]
    assert int(gap.reason.split()[0]) == auditor.dropped
    assert len(users) + auditor.dropped == 2011
    assert users[:10] == [f"u{i}" for i in range(10)] and users[-1] == "u2010"
    assert users == sorted(users, key=lambda u: int(u[1:]))  # in order, none twice
