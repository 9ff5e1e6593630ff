"""A lean load client for plugin sockets: raw asyncio, HTTP/1.1 keep-alive, pre-encoded requests.

Each simulated client holds one connection, as the daemon's plugin client does, and sends its
calls one after another (closed loop). Latency is measured around one request/response on the
socket with perf_counter_ns. The client's own CPU time is reported so it can be compared with
the server's: against the floor it shows how much of the machine the client itself takes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.workload import Call

ALLOW = re.compile(rb'"Allow"\s*:\s*true')  # any JSON spacing


def encode(call: Call) -> bytes:
    return (
        f"POST {call.path} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Accept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(call.body)}\r\n\r\n"
    ).encode() + call.body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Connection:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        start = head.find(b"Content-Length: ")
        if start < 0:
            start = head.lower().find(b"content-length: ")
        end = head.find(b"\r\n", start)
        body = await self.reader.readexactly(int(head[start + 16 : end]))
        return status, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@dataclass
class LoadResult:
    seconds: float
    calls: int
    latencies: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # label -> ns
    denied: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    client_cpu: float = 0.0
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (t since start, latency ns)

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def all_latencies(self) -> list[int]:
        return [v for values in self.latencies.values() for v in values]

    def add(self, other: LoadResult) -> LoadResult:
        """This result with `other`'s calls, time, latencies and counts added (rounds of one measurement); its
        timeline follows this one's."""
        self.timeline.extend((self.seconds + at, latency) for at, latency in other.timeline)
        self.seconds += other.seconds
        self.calls += other.calls
        self.client_cpu += other.client_cpu
        for label, values in other.latencies.items():
            self.latencies[label].extend(values)
        for mine, theirs in ((self.denied, other.denied), (self.errors, other.errors)):
            for label, count in theirs.items():
                mine[label] += count
        return self


async def run_load(
    socket_path: Path,
    per_client: Sequence[Sequence[Call]],
    *,
    seconds: float,
    warmup_rounds: int = 1,
    keep_timeline: bool = False,
    setup: Sequence[Sequence[Call]] = (),
) -> LoadResult:
    """Each client replays its calls in a loop for `seconds` (after its `setup` calls, sent once, and
    `warmup_rounds` unmeasured rounds)."""
    encoded = [[(c.label, encode(c)) for c in calls] for calls in per_client]
    conns = [await Connection.open(socket_path) for _ in encoded]
    for conn, calls in zip(conns, setup, strict=False):
        for call in calls:
            await conn.request(encode(call))
    for conn, calls in zip(conns, encoded, strict=True):
        for _ in range(warmup_rounds):
            for _, raw in calls:
                await conn.request(raw)
    result = LoadResult(seconds=0.0, calls=0)
    lat, denied, errors, timeline = result.latencies, result.denied, result.errors, result.timeline
    perf = time.perf_counter_ns
    began = perf()
    stop_at = began + int(seconds * 1e9)

    async def worker(conn: Connection, calls: list[tuple[str, bytes]]) -> int:
        done = 0
        while perf() < stop_at:
            for label, raw in calls:
                t0 = perf()
                status, body = await conn.request(raw)
                t1 = perf()
                lat[label].append(t1 - t0)
                if keep_timeline:
                    timeline.append(((t0 - began) / 1e9, t1 - t0))
                if status != 200:
                    errors[label] += 1
                elif not ALLOW.search(body):
                    denied[label] += 1
                done += 1
        return done

    cpu0 = time.process_time()
    counts = await asyncio.gather(*(worker(c, calls) for c, calls in zip(conns, encoded, strict=True)))
    result.seconds = (perf() - began) / 1e9
    result.client_cpu = time.process_time() - cpu0
    result.calls = sum(counts)
    for conn in conns:
        await conn.close()
    return result


async def call_once(socket_path: Path, path: str, body: bytes) -> tuple[int, bytes]:
    conn = await Connection.open(socket_path)
    try:
        return await conn.request(encode(Call(path, body, "")))
    finally:
        await conn.close()
