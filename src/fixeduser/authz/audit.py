"""Decision audit: one JSON line per decision, never any secret (no bodies, headers or env)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import IO, Protocol

from pydantic import BaseModel, ConfigDict, field_serializer


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    time: float
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

    @field_serializer("time")
    def _microseconds(self, value: float) -> float:
        return round(value, 6)


class Auditor(Protocol):
    def record(self, record: AuditRecord) -> None: ...


_CHUNK = 32  # audit lines serialized between two hand-overs of the GIL (about 100 µs of work)


class JsonLineAuditor:
    """Buffers lines in memory and writes them from a worker thread, off the decision path."""

    def __init__(self, destination: Path | None, *, flush_interval: float = 0.2) -> None:
        self._destination = destination
        self._pending: list[AuditRecord] = []
        self._flush_interval = flush_interval
        self._stream: IO[str] = sys.stdout if destination is None else destination.open("a", encoding="utf-8")
        self.counts: dict[str, int] = {"allow": 0, "deny": 0}

    def record(self, record: AuditRecord) -> None:
        self.counts["allow" if record.allow else "deny"] += 1
        self._pending.append(record)  # serialized in the writer thread, off the decision path

    def _write(self, records: list[AuditRecord]) -> None:
        for start in range(0, len(records), _CHUNK):
            self._stream.write("".join(record.model_dump_json() + "\n" for record in records[start : start + _CHUNK]))
            # Serializing holds the GIL; without a break the event loop could wait a whole switch
            # interval (5 ms) for it during a burst. sleep(0) hands it over between chunks.
            time.sleep(0)
        self._stream.flush()

    async def flush(self) -> None:
        if self._pending:
            records, self._pending = self._pending, []
            await asyncio.to_thread(self._write, records)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
        if self._destination is not None:
            self._stream.close()


def now() -> float:
    return time.time()  # rounded to microseconds when the line is written, off the decision path
