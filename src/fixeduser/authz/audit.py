"""Decision audit: one JSON line per decision, never any secret (no bodies, headers or env).

Lines wait in memory for the writer (`JsonLineAuditor.run`), in a backlog bounded in lines and in
bytes. When the audit log cannot be written (a full disk), the lines of the failed write are kept
and retried with backoff; once the backlog is full, new lines are dropped and counted, and the
count is written to the audit log as one `audit.dropped` line as soon as it can be written again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

import orjson
from pydantic import TypeAdapter

from fixeduser.clipping import AUDIT_REASON_LIMIT, VALUE_LIMIT, clip
from fixeduser.linux.mounts import is_local_regular_file

log = logging.getLogger(__name__)

MAX_BACKLOG_LINES = 100_000
MAX_BACKLOG_BYTES = 32 * 1024 * 1024
RETRY_MAX_SECONDS = 5.0  # the longest wait between two attempts at a failing audit log
EXACT_COPY_ABOVE = 4096  # bytes: longer lines are copied to an exact-size object before they wait
SERIALIZE_BATCH = 256  # records wait unserialized at most this many (their memory is bounded too)
DROP_REPORT_SECONDS = 60.0  # at most one log line per this long about records being dropped
ON_LOOP_BYTES = 256 * 1024  # a larger batch (a backlog after a failure) goes to the writer thread even so


# A dataclass, not a pydantic model: one is built for every decision, from values the authorizer
# already holds as these types, and validating them again is needless work on the hottest path
# (bench/NOTES.md#audit-record). Audit lines are read back (tests, tools) through `AUDIT_LINE`,
# which does validate. Every text field is clipped
# (`__post_init__`, which `AUDIT_LINE` runs too): a request can quote megabytes in a path or name.
@dataclass(slots=True)  # not frozen: a frozen one takes twice as long to build (bench/NOTES.md#audit-record)
class AuditRecord:
    time: float  # seconds since the epoch
    phase: str
    user: str
    auth: str
    method: str
    path: str
    action: str
    target: str | None
    allow: bool
    reason: str
    rule: str | None
    policy: str

    def __post_init__(self) -> None:
        # Comparisons first: clipping is the rare case, and this runs for every decision.
        if len(self.user) > VALUE_LIMIT:
            self.user = clip(self.user)
        if len(self.auth) > VALUE_LIMIT:
            self.auth = clip(self.auth)
        if len(self.method) > VALUE_LIMIT:
            self.method = clip(self.method)
        if len(self.path) > VALUE_LIMIT:
            self.path = clip(self.path)
        if len(self.action) > VALUE_LIMIT:
            self.action = clip(self.action)
        if self.target is not None and len(self.target) > VALUE_LIMIT:
            self.target = clip(self.target)
        if len(self.reason) > AUDIT_REASON_LIMIT:
            self.reason = clip(self.reason, AUDIT_REASON_LIMIT)
        if self.rule is not None and len(self.rule) > AUDIT_REASON_LIMIT:
            self.rule = clip(self.rule, AUDIT_REASON_LIMIT)
        if len(self.phase) > VALUE_LIMIT:
            self.phase = clip(self.phase)
        if len(self.policy) > VALUE_LIMIT:
            self.policy = clip(self.policy)


AUDIT_LINE = TypeAdapter(AuditRecord)
DROPPED_ACTION = "audit.dropped"


class Auditor(Protocol):
    def record(self, record: AuditRecord) -> None: ...


class _Sink(Protocol):
    # Whether a write is only a copy into the page cache (a regular file on a local file system), as a state
    # commit is: then the writer writes on the event loop, saving a thread hop (bench/NOTES.md#audit-writes).
    on_loop: bool

    def write(self, data: bytes) -> tuple[int, Exception | None]:
        """Append `data`; answer how many of its bytes are in the log (whole lines) and the error, if any."""
        ...

    def close(self) -> None: ...


class _FileSink:
    """An append-only file written with `os.write`: after a failed write it holds whole lines only
    (a half-written line is cut off again), and the file is reopened at the next write, so a log
    deleted or rotated to free space is recreated and its space released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.on_loop = False  # until an open says what the path is now
        self._open()  # an audit log that cannot be opened at all is a start-up error, as before

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self.on_loop = is_local_regular_file(self._fd)
        return self._fd

    def write(self, data: bytes) -> tuple[int, Exception | None]:
        done = 0
        try:
            fd = self._open()
            view = memoryview(data)
            while done < len(data):
                done += os.write(fd, view[done:])
        except OSError as exc:
            whole = data.rfind(b"\n", 0, done) + 1
            if whole < done and self._fd is not None:
                try:
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size - (done - whole))
                except OSError:
                    whole = done  # the half line stays; the rest of it follows when the log works again
            self.close()
            return whole, exc
        return done, None

    def close(self) -> None:
        self.on_loop = False  # the path is opened again, and looked at again, at the next write
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("closing the audit log failed", extra={"error": str(exc)})


class _StreamSink:
    """Standard output (no --audit-log): all or nothing as far as we can tell."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        try:
            self.on_loop = is_local_regular_file(stream.fileno())  # redirected to a file, say
        except (OSError, ValueError):
            self.on_loop = False

    def write(self, data: bytes) -> tuple[int, Exception | None]:
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError) as exc:
            return 0, exc
        return len(data), None

    def close(self) -> None:
        pass


class JsonLineAuditor:
    """Buffers lines in memory (bounded) and writes them after the decisions, in batches: on the event loop to a
    local file (`_Sink.on_loop`), otherwise from a thread of its own (the default executor also runs probes that
    can hang on a FUSE file system, and audit lines must not wait behind them)."""

    def __init__(
        self,
        destination: Path | None,
        *,
        flush_interval: float = 0.2,
        max_lines: int = MAX_BACKLOG_LINES,
        max_bytes: int = MAX_BACKLOG_BYTES,
        retry_max: float = RETRY_MAX_SECONDS,
        report_interval: float = DROP_REPORT_SECONDS,
    ) -> None:
        self._destination = destination
        self._sink: _Sink = _StreamSink(sys.stdout.buffer) if destination is None else _FileSink(destination)
        self._flush_interval = flush_interval
        self._max_lines, self._max_bytes = max_lines, max_bytes
        self._retry_max, self._report_interval = retry_max, report_interval
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._unwritten = b""  # what a failed write left over (whole lines), written before anything else
        self._unwritten_lines = 0
        self._written_of_last = 0  # bytes of the last attempted write that are in the log
        self._in_flight = (0, 0)  # lines and bytes being written now (part of the backlog until written)
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fixeduser-audit")
        self._recorded = asyncio.Event()  # set by `record`: the writer sleeps while nothing is recorded
        self.counts: dict[str, int] = {"allow": 0, "deny": 0}
        self._fresh: list[AuditRecord] = []  # recorded, not yet serialized into the backlog
        self._dropped = 0
        self._unreported = 0  # dropped, not yet said so in the audit log
        self._gap_at = 0  # where in `_pending` the unreported records would have been
        self._gap_since = 0.0
        self._unlogged = 0  # dropped, not yet said so in the plugin log
        self._last_drop_log = -math.inf
        self.write_failures = 0  # failed writes since the start
        self.failing_since: float | None = None  # wall time of the first failure of the current run of them
        self.last_error: str | None = None

    @property
    def backlog_lines(self) -> int:
        self._serialize_fresh()
        return self._serialized_lines()

    @property
    def backlog_bytes(self) -> int:
        self._serialize_fresh()
        return self._serialized_bytes()

    @property
    def dropped(self) -> int:
        """Records dropped since the start (a full backlog)."""
        self._serialize_fresh()
        return self._dropped

    def _serialized_lines(self) -> int:
        return len(self._pending) + self._unwritten_lines + self._in_flight[0]

    def _serialized_bytes(self) -> int:
        return self._pending_bytes + len(self._unwritten) + self._in_flight[1]

    def record(self, record: AuditRecord) -> None:
        self.counts["allow" if record.allow else "deny"] += 1
        # Serialized later, in batches (`_serialize_fresh`): one decision at a time, right after the plugin was idle,
        # serializing took 13 µs of the daemon's wait, in a batch about 1 (bench/NOTES.md#audit-batches).
        self._fresh.append(record)
        self._recorded.set()
        if len(self._fresh) >= SERIALIZE_BATCH:
            self._serialize_fresh()

    def _serialize_fresh(self) -> None:
        """Serialize the records not yet serialized into the backlog, in order, within its bounds (a record
        that does not fit is dropped and counted, as if it had been recorded now). Anything that reads or
        writes the backlog serializes them first."""
        fresh, self._fresh = self._fresh, []
        for record in fresh:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            if len(line) > EXACT_COPY_ABOVE:  # orjson keeps its grown buffer (64 KiB for a 5 KiB line)
                line = bytes(memoryview(line))  # the backlog holds what it counts
            if self._serialized_lines() >= self._max_lines or self._serialized_bytes() + len(line) > self._max_bytes:
                self._drop(record.time)
                continue
            self._pending.append(line)
            self._pending_bytes += len(line)

    def _drop(self, when: float) -> None:
        if not self._unreported:
            self._gap_at, self._gap_since = len(self._pending), when
        self._dropped += 1
        self._unreported += 1
        self._unlogged += 1

    def _dropped_line(self) -> bytes:
        since = datetime.fromtimestamp(self._gap_since, UTC).isoformat(timespec="seconds")
        record = AuditRecord(
            time=now(),
            phase="audit",
            user="",
            auth="",
            method="",
            path="",
            action=DROPPED_ACTION,
            target=None,
            allow=False,
            reason=f"{self._unreported} records dropped from {since} on: the audit backlog was full"
            + (f" ({self.last_error})" if self.last_error else ""),
            rule=None,
            policy="",
        )
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)

    async def flush(self) -> bool:
        """Write what is waiting; False if the audit log could not take all of it (it stays waiting).

        What a failed write left over is written first, alone; the lines recorded since follow
        once it is in, with the `audit.dropped` line where the dropped records would have been."""
        async with self._lock:
            self._serialize_fresh()
            if self._unwritten:
                data, self._unwritten, self._unwritten_lines = self._unwritten, b"", 0
                if not await self._write(data):
                    return False
            if not self._pending and not self._unreported:
                return True
            lines, self._pending, self._pending_bytes = self._pending, [], 0
            if not self._unreported:
                return await self._write(b"".join(lines))
            dropped, since, offset = self._unreported, self._gap_since, sum(map(len, lines[: self._gap_at]))
            marker = self._dropped_line()
            lines.insert(self._gap_at, marker)
            self._unreported = 0
            if await self._write(b"".join(lines)):
                return True
            self._unmark(marker, offset, dropped, since)
            return False

    def _unmark(self, marker: bytes, offset: int, dropped: int, since: float) -> None:
        """Take the `audit.dropped` line of a failed batch (at `offset`) out of what waits to be
        retried, and count its records as dropped again: one line for the whole gap, however many
        attempts fail, and the backlog stays within its bounds."""
        start = offset - self._written_of_last
        if start < 0 or self._unwritten[start : start + len(marker)] != marker:
            return  # in the log already
        self._unwritten = self._unwritten[:start] + self._unwritten[start + len(marker) :]
        self._unwritten_lines -= 1
        self._gap_since = min(since, self._gap_since) if self._unreported else since
        self._unreported += dropped
        self._gap_at = 0  # the gap follows what waits to be retried: before every pending line

    async def _write(self, data: bytes) -> bool:
        if self._sink.on_loop and len(data) <= ON_LOOP_BYTES:
            try:
                written, error = self._sink.write(data)
            except Exception as exc:  # as below
                written, error = 0, exc
            return self._settle(data, written, error)
        self._in_flight = (data.count(b"\n"), len(data))
        attempt = asyncio.get_running_loop().run_in_executor(self._thread, self._sink.write, data)
        cancelled = False
        try:
            try:
                written, error = await asyncio.shield(attempt)
            except asyncio.CancelledError:  # stopping: the thread writes on, so learn how it went first
                cancelled = True
                written, error = await attempt
        except Exception as exc:  # not the disk: still, the lines must not be lost
            written, error = 0, exc
        finally:
            self._in_flight = (0, 0)
        if cancelled:
            self._settle(data, written, error)
            raise asyncio.CancelledError
        return self._settle(data, written, error)

    def _settle(self, data: bytes, written: int, error: Exception | None) -> bool:
        self._written_of_last = written
        if error is None:
            self._recovered()
            return True
        self._unwritten = data[written:]
        self._unwritten_lines = self._unwritten.count(b"\n")
        self._failed(error)
        return False

    def _failed(self, error: Exception) -> None:
        self.write_failures += 1
        self.last_error = clip(f"{type(error).__name__}: {error}")
        if self.failing_since is None:
            self.failing_since = time.time()
            log.error(
                "cannot write the audit log; its lines wait in memory (bounded) and are retried",
                extra=self._state(),
            )

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.warning(
                "the audit log is written again",
                extra={"failed_for_seconds": round(time.time() - self.failing_since, 1), **self._state()},
            )
        self.failing_since = None

    def _state(self) -> dict[str, object]:
        return {
            "audit_log": str(self._destination or "stdout"),
            "error": self.last_error,
            "backlog_lines": self.backlog_lines,
            "backlog_bytes": self.backlog_bytes,
            "dropped": self.dropped,
        }

    def report_drops(self, *, now: float | None = None) -> None:
        """Log how many records were dropped since the last such line, at most once per `report_interval`."""
        moment = time.monotonic() if now is None else now
        if self._unlogged and moment - self._last_drop_log >= self._report_interval:
            log.error("audit records dropped: the backlog is full", extra={"count": self._unlogged, **self._state()})
            self._unlogged = 0
            self._last_drop_log = moment

    def problems(self) -> list[str]:
        """What /healthz reports: an audit log that cannot be written."""
        if self.failing_since is None:
            return []
        since = datetime.fromtimestamp(self.failing_since, UTC).isoformat(timespec="seconds")
        return [
            f"degraded: the audit log {self._destination or 'stdout'} cannot be written since {since}"
            f" ({self.last_error}); {self.backlog_lines} lines ({self.backlog_bytes} bytes) wait,"
            f" {self.dropped} dropped so far"
        ]

    async def run(self) -> None:
        """Write what was recorded `flush_interval` after it came; while the log fails, retry with backoff up
        to `retry_max`. Idle, it waits for a record instead of waking to find nothing."""
        delay = self._flush_interval
        while True:
            if delay == self._flush_interval and not self._unlogged:
                await self._recorded.wait()
            await asyncio.sleep(delay)
            self._recorded.clear()  # what was recorded so far is in this flush; later records wake the next
            ok = await self.flush()
            self.report_drops()
            delay = self._flush_interval if ok else min(max(delay, self._flush_interval) * 2, self._retry_max)

    async def close(self) -> None:
        if not await self.flush():
            log.error("audit lines lost at shutdown: the audit log cannot be written", extra=self._state())
        self.report_drops(now=math.inf)
        self._sink.close()
        self._thread.shutdown(wait=False)


def now() -> float:
    return time.time()
