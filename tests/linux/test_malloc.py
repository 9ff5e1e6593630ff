"""One malloc arena for every thread: a worker thread's allocations do not reserve an arena of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
_PROBE = """
import sys, threading
sys.path.insert(0, sys.argv[2])
from fixeduser.linux.malloc import share_one_arena
if sys.argv[1] == "shared":
    assert share_one_arena()
def allocate():
    kept = [bytes(1000) for _ in range(20000)]  # past pymalloc's 512 bytes: glibc's malloc, in this thread
thread = threading.Thread(target=allocate)
thread.start()
thread.join()
reserved = 0  # glibc reserves 64 MiB of address space (---p, mostly) for each arena it adds
for line in open("/proc/self/maps"):
    fields = line.split()
    if len(fields) == 5 and fields[1] == "---p":
        low, high = (int(x, 16) for x in fields[0].split("-"))
        reserved += high - low > 16 << 20
print(reserved)
"""


def _arenas_reserved(mode: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, str(SRC)], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc on Linux")
def test_a_worker_thread_allocates_from_the_main_arena_once_shared() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arenas_reserved("default", env) >= 1  # the probe sees glibc's default: an arena for the thread
    assert _arenas_reserved("shared", env) == 0


def test_an_admins_own_arena_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from fixeduser.linux.malloc import share_one_arena  # noqa: PLC0415

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert share_one_arena() is False
