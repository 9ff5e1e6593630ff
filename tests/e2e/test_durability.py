"""Nothing is lost across a plugin crash, a plugin restart or a daemon restart (real dockerd, real bindfs)."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fixeduser.linux.mounts import mounts_below
from fixeduser.sandbox import Engine

from .conftest import E2E, own_stack

UIDS = {"alice": (10001, 10000), "bob": (10002, 10000)}
KEYS = {"alice": "10001:10000", "bob": "10002:10000"}


@pytest.fixture(scope="module")
def stack(engine: Engine) -> Iterator[E2E]:
    """A stack of its own, pruning stale mount records after 3 s instead of 3 min."""
    yield from own_stack(
        engine, name="durability", prefix="fud", extra_args=("--mount-prune-grace", "3", "--reconcile-interval", "1")
    )


def restart_plugin(stack: E2E, *, crash: bool) -> None:
    """Kill (SIGKILL) or stop the plugin process, then start it again on the same state directory."""
    if crash:
        stack.plugin.kill()
    else:
        stack.plugin.stop()
    stack.plugin.start()
    sock = stack.plugin.plugin_dir / f"{stack.plugin.volume_name}.sock"
    deadline = time.monotonic() + 20
    while True:  # the spec files outlive a crash: wait until the new process really listens
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
            return
        except OSError:
            assert time.monotonic() < deadline, stack.plugin.log_tail()
            time.sleep(0.05)


def inspect(stack: E2E, volume: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(stack.ok("volume", "inspect", volume))[0]
    return info


def running_by_user(stack: E2E, volume: str) -> Counter[str]:
    names = stack.ok("ps", "--filter", f"volume={volume}", "--format", "{{.Names}}").split()
    return Counter(name.split("-")[1] for name in names)


def views_mounted(stack: E2E) -> list[str]:
    return [m.mount_point for m in mounts_below(stack.plugin.state_dir / "mnt") if m.fstype.startswith("fuse")]


def test_plugin_crash_in_a_burst_of_starts_keeps_every_count_and_file(stack: E2E) -> None:
    """SIGKILL the plugin while 24 containers start: after a restart the counts match the running containers, files are
    where they belong, and once every container is gone no mount is counted and no view is left."""
    volume = "eng-burst"
    stack.ok("volume", "create", "-d", stack.driver, volume, user="alice")
    backing = stack.plugin.local_root / volume
    jobs = [("alice" if i % 2 == 0 else "bob", i) for i in range(24)]

    def run(job: tuple[str, int]) -> int:
        user, index = job
        return stack.docker("run", "-d", "--name", f"burst-{user}-{index}", "--network", "none",
                            "-v", f"{volume}:/data", "busybox:local", "sh", "-c",
                            f"echo {index} > /data/{user}-{index} || {{ id; ls -lnd /data; }}; exec sleep 600",
                            user=user, timeout=180).returncode  # fmt: skip

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        time.sleep(1.0)  # some starts done, some in flight, some not yet begun
        restart_plugin(stack, crash=True)
        codes = [f.result() for f in futures]
    assert codes.count(0) > 0, stack.plugin.log_tail()

    seen: dict[str, Any] = {}

    def counts_match() -> bool:
        running = running_by_user(stack, volume)
        seen["expected"] = {KEYS[user]: n for user, n in running.items()}
        seen["counted"] = inspect(stack, volume)["Status"]["mounts"]
        return bool(seen["counted"] == seen["expected"])

    stack.wait(counts_match, lambda: f"mount counts to match the running containers: {seen}")
    running = running_by_user(stack, volume)
    assert sum(running.values()) > 0
    for name in stack.ok("ps", "--filter", f"volume={volume}", "--format", "{{.Names}}").split():
        _, user, index = name.split("-")
        written = backing / f"{user}-{index}"

        def missing(name: str = name, written: Path = written) -> str:  # what the container itself said
            logs = stack.docker("logs", name)
            state = stack.docker("inspect", "-f", "{{json .State}} {{json .Mounts}}", name)
            return f"{written} (container output: {logs.stdout}{logs.stderr}; {state.stdout})"

        stack.wait(written.exists, missing, within=10)
        assert written.read_text() == f"{index}\n"
        assert (written.stat().st_uid, written.stat().st_gid) == UIDS[user], name
    for user, ids in UIDS.items():  # whatever started, wrote as its owner, crash or not
        for path in backing.glob(f"{user}-*"):
            assert (path.stat().st_uid, path.stat().st_gid) == ids, path

    # A clean restart with containers still running: views stay, later Unmounts are honoured.
    before = views_mounted(stack)
    restart_plugin(stack, crash=False)
    assert views_mounted(stack) == before
    stack.wait(counts_match, lambda: f"mount counts after a clean restart: {seen}")

    names = stack.ok("ps", "-a", "--filter", "name=burst-", "--format", "{{.Names}} {{.State}}").splitlines()
    for name, state in (line.split() for line in names):
        removed = stack.docker("rm", "-f", name, user=name.split("-")[1])
        if removed.returncode != 0:
            # Created in the instant the plugin died, before the create's AuthZRes could record its
            # owner: nobody owns it (fail closed), so it never started; an admin removes it.
            assert "has no owner" in removed.stderr and state == "created", (name, state, removed.stderr)
            stack.ok("rm", "-f", name)
    stack.wait(lambda: inspect(stack, volume)["Status"]["mounts"] == {}, "all mounts to be released")
    stack.wait(lambda: views_mounted(stack) == [], "every view to be unmounted")
    stack.ok("volume", "rm", volume)


def test_daemon_and_plugin_restart_keep_volumes_options_and_data(stack: E2E) -> None:
    """After the daemon and the plugin restart (containers killed), every volume is still listed with its options,
    its data is there, stale mount records are pruned, and the volume mounts again."""
    stack.ok("volume", "create", "-d", stack.driver, "-o", "mode=0750", "eng-keep1", user="alice")
    stack.ok("volume", "create", "-d", stack.driver, "-o", "purge=false", "eng-keep2", user="bob")
    stack.ok("run", "-d", "--name", "keep-alice", "--network", "none", "-v", "eng-keep1:/data", "busybox:local",
             "sh", "-c", "echo kept > /data/f; exec sleep 600", user="alice")  # fmt: skip
    stack.wait((stack.plugin.local_root / "eng-keep1" / "f").exists, "the file", within=10)
    assert inspect(stack, "eng-keep1")["Status"]["mounts"] == {KEYS["alice"]: 1}

    stack.stack.dockerd.stop()
    restart_plugin(stack, crash=False)
    stack.stack.dockerd.start()

    listed = stack.ok("volume", "ls", "--format", "{{.Name}} {{.Driver}}").split("\n")
    assert f"eng-keep1 {stack.driver}" in listed and f"eng-keep2 {stack.driver}" in listed
    assert inspect(stack, "eng-keep1")["Options"] == {"mode": "0750"}
    assert inspect(stack, "eng-keep2")["Options"] == {"purge": "false"}
    stack.wait(lambda: inspect(stack, "eng-keep1")["Status"]["mounts"] == {}, "the dead container's mount to go")
    out = stack.ok("run", "--rm", "--network", "none", "-v", "eng-keep1:/data", "busybox:local", "cat", "/data/f",
                   user="alice")  # fmt: skip
    assert out == "kept\n"
    stack.ok("rm", "-f", "keep-alice", user="alice")
    stack.wait(lambda: views_mounted(stack) == [], "every view to be unmounted")
