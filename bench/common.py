"""Shared pieces: statistics, process handling, machine facts, paths."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
POLICY_DIR = REPO / "policies"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100); NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p90: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "median": self.median,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        }


def summarize(values: Iterable[float]) -> Summary:
    ordered = sorted(values)
    n = len(ordered)
    mean = sum(ordered) / n if n else float("nan")
    return Summary(
        n,
        percentile(ordered, 50),
        percentile(ordered, 90),
        percentile(ordered, 99),
        ordered[-1] if n else float("nan"),
        mean,
    )


# --------------------------------------------------------------------------- processes


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in KiB (empty if it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if path.is_socket():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening on {path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args} did not listen on {path} within {timeout} s")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM to this process's own PID, SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class FloorServer:
    """`python -m bench.floor SOCKET` in its own process."""

    def __init__(
        self, socket_path: Path, log: Path, transport: str = "asyncio", volume_root: Path | None = None
    ) -> None:
        self.socket_path = socket_path
        self.log = log
        self.transport = transport
        self.volume_root = volume_root  # also a trivial volume driver serving folders here
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FloorServer:
        with self.log.open("ab") as log:
            argv = [sys.executable, "-m", "bench.floor", str(self.socket_path), "--transport", self.transport]
            if self.volume_root is not None:
                argv += ["--volume-root", str(self.volume_root)]
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for_socket(self.socket_path, self.proc)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


# --------------------------------------------------------------------------- machine


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "n/a"


def machine_info() -> dict[str, str]:
    cpu = "n/a"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "dockerd": _first_line(["dockerd", "--version"]) if shutil.which("dockerd") else "n/a",
        "docker CLI": _first_line(["docker", "--version"]) if shutil.which("docker") else "n/a",
        "bindfs": _first_line(["bindfs", "--version"]) if shutil.which("bindfs") else "n/a",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "speed: 10 million Python additions": f"{python_loop_seconds():.2f} s (best of 3)",
        "speed: a byte to another process and back": f"{round_trip_microseconds():.1f} µs (median of 2,000)",
    }
    with contextlib.suppress(Exception):
        import aiohttp  # noqa: PLC0415

        info["aiohttp"] = aiohttp.__version__
    with contextlib.suppress(Exception):
        from importlib.metadata import version  # noqa: PLC0415

        info["pycasbin"] = version("pycasbin")
        info["httptools"] = version("httptools")
    return info


def python_loop_seconds(additions: int = 10_000_000) -> float:
    """A plain interpreter loop (in a function: local names), best of three. Every figure of a run moves with
    the machine's speed; this puts one number on it, so that runs on different machines can be compared."""
    best = math.inf
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(additions):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def round_trip_microseconds(rounds: int = 2_000) -> float:
    """A byte sent to a child process over a unix socket pair and echoed back: the wake-ups and switches that
    every plugin call costs (two per call), which differ between machines more than their interpreters do."""
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # echo until the parent closes its end
        ours.close()
        while data := theirs.recv(1):
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    times = []
    try:
        for _ in range(rounds):
            started = time.perf_counter_ns()
            ours.sendall(b"x")
            ours.recv(1)
            times.append(time.perf_counter_ns() - started)
    finally:
        ours.close()
        os.waitpid(child, 0)
    return sorted(times)[len(times) // 2] / 1000


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


@contextlib.contextmanager
def work_dir(prefix: str = "fu-bench-"):  # type: ignore[no-untyped-def]
    """A private temp directory other uids can traverse (bindfs runs as the identity); removed after,
    once nothing is mounted below it (leftover mounts are unmounted lazily first)."""
    import tempfile  # noqa: PLC0415

    from fixeduser.sandbox import make_private_dir, unmount_all_under  # noqa: PLC0415

    base = make_private_dir(Path(tempfile.gettempdir()), prefix=prefix)
    try:
        yield base
    finally:
        left = unmount_all_under([base])
        if left:
            print(f"bench: could not unmount {left}; leaving {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
