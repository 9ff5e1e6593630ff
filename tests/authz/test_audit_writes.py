"""Where the audit writer writes: on the event loop to a local file (a page-cache copy, as a state commit is), from a
thread of its own otherwise, so lines never wait behind other work in the default executor (FUSE probes can hang
there)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fixeduser.authz.audit import AUDIT_LINE, ON_LOOP_BYTES, JsonLineAuditor
from tests.authz.test_audit_backlog import record
from tests.waiting import until


@pytest.fixture
async def stuck_default_executor() -> AsyncIterator[threading.Event]:
    """The loop's default executor with every thread held (as by probes of a hung FUSE mount) until the event is set."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    release = threading.Event()
    held = [loop.run_in_executor(None, release.wait) for _ in range(2)]
    try:
        yield release
    finally:
        release.set()
        await asyncio.gather(*held)


def test_a_flush_to_a_local_file_is_written_in_the_flush_itself(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    auditor = JsonLineAuditor(log)
    auditor.record(record(1))
    flushing = auditor.flush()
    with pytest.raises(StopIteration) as done:
        flushing.send(None)  # finishes in its first step: nothing handed to a thread, nothing awaited
    assert done.value.value is True
    [line] = log.read_bytes().splitlines()
    assert AUDIT_LINE.validate_json(line).user == "u1"


async def test_a_large_backlog_goes_to_the_writer_thread_and_arrives_whole(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    auditor = JsonLineAuditor(log)
    count = ON_LOOP_BYTES // 200 + 100  # each line is under 200 bytes: more than ON_LOOP_BYTES in all
    for i in range(count):
        auditor.record(record(i))
    flushing = asyncio.ensure_future(auditor.flush())
    await asyncio.sleep(0)
    assert not flushing.done()  # waits for the thread
    assert await flushing is True
    assert [AUDIT_LINE.validate_json(line).user for line in log.read_bytes().splitlines()] == [
        f"u{i}" for i in range(count)
    ]
    await auditor.close()


async def test_lines_to_a_pipe_do_not_wait_behind_a_stuck_default_executor(
    tmp_path: Path, stuck_default_executor: threading.Event
) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        auditor = JsonLineAuditor(fifo)
        auditor.record(record(7))
        flushing = asyncio.ensure_future(auditor.flush())
        done, _ = await asyncio.wait({flushing}, timeout=10)
        stuck_default_executor.set()  # whatever happened: the flush must be able to end
        assert flushing in done, "the audit lines waited behind the stuck default executor"
        assert flushing.result() is True
        [line] = os.read(reader, 65536).splitlines()
        assert AUDIT_LINE.validate_json(line).user == "u7"
        await auditor.close()
    finally:
        os.close(reader)


async def test_a_local_file_is_written_while_the_default_executor_is_stuck(
    tmp_path: Path, stuck_default_executor: threading.Event
) -> None:
    log = tmp_path / "audit.jsonl"
    auditor = JsonLineAuditor(log, flush_interval=0.01)
    writer = asyncio.create_task(auditor.run())
    try:
        auditor.record(record(3))
        await until(log.read_bytes, "the audit line in the log", within=10)
        [line] = log.read_bytes().splitlines()
        assert AUDIT_LINE.validate_json(line).user == "u3"
    finally:
        stuck_default_executor.set()  # before the writer is cancelled: a write in flight is waited for
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
