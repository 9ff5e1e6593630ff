"""The audit writer under a failing disk: a bounded backlog, drops counted and reported (metric, log,
one audit line), whole lines only, and writing resumes by itself once the log can be written.

The failing disk here is /dev/full (every write: ENOSPC) behind a symlink that the test replaces
with a regular file when "space returns"; test_audit_full_disk.py does it with a real full
filesystem (root)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from fixeduser.authz.audit import AUDIT_LINE, DROPPED_ACTION, AuditRecord, JsonLineAuditor
from tests.waiting import until

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")


def record(i: int, *, path: str = "/containers/create") -> AuditRecord:
    return AuditRecord(
        time=time.time(), phase="request", user=f"u{i}", auth="TLS", method="POST", path=path,
        action="container.create", target=None, allow=True, reason="allowed", rule=None, policy="v1",
    )  # fmt: skip


def make_auditor(destination: Path | None, **bounds: float) -> JsonLineAuditor:
    options: dict[str, float] = {"flush_interval": 0.01, "retry_max": 0.04, **bounds}
    return JsonLineAuditor(destination, **options)  # type: ignore[arg-type]


def full_disk(tmp_path: Path) -> Path:
    log = tmp_path / "audit.jsonl"
    log.symlink_to(DEV_FULL)
    return log


def space_returns(log: Path) -> None:
    log.unlink()  # the writer reopens the path after a failure: now a regular file


def read(log: Path) -> list[AuditRecord]:
    return [AUDIT_LINE.validate_json(line) for line in log.read_text().splitlines()]


@needs_dev_full
async def test_backlog_is_bounded_in_lines_drops_are_counted_and_reported_once_writable(tmp_path: Path) -> None:
    log = full_disk(tmp_path)
    auditor = make_auditor(log, max_lines=5)
    for i in range(3):
        auditor.record(record(i))
    assert await auditor.flush() is False
    assert auditor.backlog_lines == 3 and auditor.write_failures == 1
    [problem] = auditor.problems()
    assert "cannot be written" in problem and "No space left on device" in problem and "3 lines" in problem
    for i in range(3, 10):
        auditor.record(record(i))
    assert (auditor.backlog_lines, auditor.dropped) == (5, 5)
    assert auditor.counts["allow"] == 10  # decisions are counted whether or not their line fits
    assert await auditor.flush() is False  # still full: nothing lost, nothing doubled
    assert (auditor.backlog_lines, auditor.dropped) == (5, 5)

    space_returns(log)
    assert await auditor.flush() is True
    auditor.record(record(10))
    await auditor.close()
    lines = read(log)
    assert [r.user for r in lines[:5]] == ["u0", "u1", "u2", "u3", "u4"]
    assert lines[5].action == DROPPED_ACTION and lines[5].reason.startswith("5 records dropped from ")
    assert "No space left on device" in lines[5].reason
    assert lines[6].user == "u10" and len(lines) == 7
    assert auditor.problems() == [] and auditor.backlog_lines == 0 and auditor.backlog_bytes == 0


@needs_dev_full
async def test_backlog_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Bad input (a 1 MiB path per request) with the disk full: the memory held stays under max_bytes."""
    auditor = make_auditor(full_disk(tmp_path), max_bytes=20_000)
    for i in range(200):
        auditor.record(record(i, path="/" + "x" * (1 << 20)))
    assert await auditor.flush() is False
    for i in range(200):
        auditor.record(record(i, path="/" + "x" * (1 << 20)))
    assert auditor.backlog_bytes <= 20_000
    assert auditor.backlog_lines + auditor.dropped == 400
    assert auditor.dropped > 380


@needs_dev_full
async def test_the_writer_resumes_by_itself_and_logs_drops_periodically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = full_disk(tmp_path)
    auditor = make_auditor(log, max_lines=3, report_interval=3600)
    caplog.set_level(logging.INFO, logger="fixeduser.authz.audit")
    writer = asyncio.create_task(auditor.run())
    try:
        for i in range(6):
            auditor.record(record(i))
        await until(lambda: auditor.write_failures >= 3)  # retried, with backoff
        assert auditor.dropped == 3
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count("audit records dropped: the backlog is full") == 1  # once per report_interval
        assert any(m.startswith("cannot write the audit log") for m in messages)
        auditor.record(record(6))
        assert auditor.dropped == 4
        space_returns(log)
        await until(lambda: auditor.failing_since is None and not auditor.backlog_lines)
        auditor.record(record(7))
        await until(lambda: not auditor.backlog_lines)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    lines = read(log)
    assert [r.user for r in lines] == ["u0", "u1", "u2", "", "u7"]
    assert lines[3].reason.startswith("4 records dropped")
    assert any(r.getMessage() == "the audit log is written again" for r in caplog.records)
    await auditor.close()


async def test_an_idle_writer_sleeps_until_something_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle, the writer does not wake to find nothing to write; a record wakes it, and it is written."""
    log = tmp_path / "audit.jsonl"
    auditor = make_auditor(log)
    flushes: list[bool] = []
    flush = auditor.flush

    async def counted_flush() -> bool:
        flushes.append(await flush())
        return flushes[-1]

    monkeypatch.setattr(auditor, "flush", counted_flush)
    writer = asyncio.create_task(auditor.run())
    try:
        await asyncio.sleep(0.3)  # thirty flush intervals
        assert flushes == []
        auditor.record(record(0))
        await until(lambda: log.exists() and [r.user for r in read(log)] == ["u0"])
        after_the_record = len(flushes)
        await asyncio.sleep(0.3)
        assert after_the_record >= 1 and len(flushes) == after_the_record
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    await auditor.close()


async def test_a_failure_that_is_not_the_disk_keeps_the_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception of the write (not only OSError) keeps the batch for the next attempt."""
    auditor = make_auditor(tmp_path / "audit.jsonl")
    auditor.record(record(0))

    def boom(data: bytes) -> tuple[int, Exception | None]:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(auditor._sink, "write", boom)
    assert await auditor.flush() is False
    assert auditor.backlog_lines == 1 and "RuntimeError: unexpected" in auditor.problems()[0]
    monkeypatch.undo()
    await auditor.close()
    assert [r.user for r in read(tmp_path / "audit.jsonl")] == ["u0"]


async def test_records_are_clipped_and_read_back_unchanged(tmp_path: Path) -> None:
    """A 1 MiB path and an 8 MiB reason become a bounded line; reading it back clips nothing more."""
    big = record(0, path="/containers/" + "m" * (1 << 20))
    big.reason = "denied: " + "r" * (8 << 20)
    big = AuditRecord(**{name: getattr(big, name) for name in AuditRecord.__slots__})  # type: ignore[arg-type]
    assert len(big.path) <= 1024 and big.path.startswith("/containers/mmm") and "characters cut]" in big.path
    assert len(big.reason) <= 4096 and big.reason.startswith("denied: rrr")
    auditor = make_auditor(tmp_path / "audit.jsonl")
    auditor.record(big)
    await auditor.close()
    assert (tmp_path / "audit.jsonl").stat().st_size < 8 * 1024
    assert read(tmp_path / "audit.jsonl") == [big]
