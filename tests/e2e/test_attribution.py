"""A mount is never done as someone else: restarts the daemon makes by itself, however their restart
policy was set, and containers a restarted daemon restores (real dockerd, real TLS users, real bindfs)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixeduser.sandbox import make_private_dir, start_stack

from .conftest import E2E, E2E_USERS, REPO

ALICE, BOB = (10001, 10000), (10002, 10000)
IMAGE = "busybox:local"
LOOKUP_TIMEOUT = 10.0  # fixeduser.docker_api.daemon.DaemonClient's default
UIDS = {"alice": ALICE, "bob": BOB}
# Each run leaves a file named after the container's creator ($WHO) and tries to read alice's secret;
# then it fails (a crash loop). Inside, every run is container root: only the files' owners tell.
RUN_FILE = "/data/run-$WHO-$(cat /proc/sys/kernel/random/uuid)"
CRASH_LOOP = f"touch {RUN_FILE}; cat /data/secret > /data/stolen-$WHO-$(cat /proc/sys/kernel/random/uuid); exit 1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """A stack of its own: its daemon and plugin are restarted and its ledger edited."""
    base = make_private_dir(tmp_path_factory.mktemp("attribution"))
    shutil.copytree(REPO / "policies", base / "policies")
    running = E2E(start_stack(base, policy_dir=base / "policies", users=E2E_USERS, prefix="fua"))
    try:
        yield running
    finally:
        running.stack.stop()


def owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


def alices_secret_service(stack: E2E, volume: str, name: str) -> Path:
    """alice's long-running service on `volume`, with a restart policy and a mode-600 file of hers."""
    stack.ok("volume", "create", "-d", stack.driver, volume, user="alice")
    stack.ok("run", "-d", "--name", name, "--network", "none", "--restart", "unless-stopped", "-v", f"{volume}:/data",
             IMAGE, "sh", "-c", "echo secret > /data/secret; chmod 600 /data/secret; exec sleep 600",
             user="alice")  # fmt: skip
    secret = stack.plugin.local_root / volume / "secret"
    stack.wait(secret.exists, "alice's secret", within=20)
    return secret


def run_always(stack: E2E, volume: str, script: str, user: str) -> str:
    """A `--restart always` container of `user`'s on `volume` running `script`; its full ID."""
    argv = ("run", "-d", "--network", "none", "--restart", "always", "-e", f"WHO={user}", "-v", f"{volume}:/data",
            IMAGE, "sh", "-c", script)  # fmt: skip
    return stack.ok(*argv, user=user).strip()


def while_refused(stack: E2E, *args: str, user: str) -> str:
    """Run a docker command that mounts, again while it is refused because another owner's container restarts on
    the same volume (the refusal must say so); its output."""
    for _ in range(60):
        result = stack.docker(*args, user=user)
        if result.returncode == 0:
            return result.stdout.strip()
        assert "different identities at once" in result.stderr, result.stderr
        time.sleep(0.5)
    raise AssertionError(f"docker {' '.join(args)} as {user} was refused for 30 s: {result.stderr}")


def assert_every_run_as_its_owner(backing: Path, secret: Path) -> None:
    runs = sorted(backing.glob("run-*"))
    for run in runs:
        assert owner(run) == UIDS[run.name.split("-")[1]], run  # owned by the identity of its container's owner
    for stolen in backing.glob("stolen-bob-*"):
        assert stolen.read_text() == "", f"{stolen} holds alice's secret"
        assert owner(stolen) == BOB
    assert owner(secret) == ALICE and secret.stat().st_mode & 0o777 == 0o600


def test_restart_policies_set_any_way_never_mount_as_someone_else(stack: E2E) -> None:
    """bob sets restart policies on his containers by daemon-assigned name, by a short ID prefix and by `/name`,
    and lets them crash-loop next to alice's service: every restart runs as bob, and her 600 file stays hers."""
    volume = "eng-shared"
    secret = alices_secret_service(stack, volume, "alice-svc")
    backing = secret.parent
    made = []
    for how in ("name", "prefix", "slash"):
        cid = stack.ok("create", "--network", "none", "-e", "WHO=bob", "-v", f"{volume}:/data", IMAGE,
                       "sh", "-c", CRASH_LOOP, user="bob").strip()  # fmt: skip
        name = stack.ok("inspect", "-f", "{{.Name}}", cid, user="bob").strip().lstrip("/")
        reference = {"name": name, "prefix": cid[:5], "slash": f"/{name}"}[how]
        stack.ok("update", "--restart", "always", reference, user="bob")
        stack.ok("start", reference, user="bob")
        made.append(cid)

    def restarted_enough() -> bool:
        counts = [json.loads(stack.ok("inspect", "-f", "{{json .RestartCount}}", c, user="bob")) for c in made]
        return min(counts) >= 3

    stack.wait(restarted_enough, "bob's containers to be restarted by the daemon")
    assert {owner(run) for run in backing.glob("run-*")} == {BOB}
    assert len(list(backing.glob("run-*"))) >= 3 * len(made)
    assert_every_run_as_its_owner(backing, secret)
    stack.ok("rm", "-f", *made, user="bob")
    stack.ok("rm", "-f", "alice-svc", user="alice")


def test_two_owners_crash_looping_on_one_volume_never_mix(stack: E2E) -> None:
    """alice's and bob's containers crash-loop on one volume at once: each start and restart runs as its owner or
    is refused with a message naming both identities, never as the other."""
    volume = "eng-loops"
    secret = alices_secret_service(stack, volume, "alice-loop-svc")
    made: dict[str, str] = {}
    for user in ("alice", "bob"):
        # Each runs two seconds before it fails, so both can be started before their restart back-off grows (a
        # container waiting out its back-off is `restarting` all along, and mounts of another owner are refused).
        made[user] = while_refused(stack, "create", "--network", "none", "--restart", "always", "-e", f"WHO={user}",
                                   "-v", f"{volume}:/data", IMAGE, "sh", "-c", f"sleep 2; {CRASH_LOOP}",
                                   user=user)  # fmt: skip
    for user, cid in made.items():
        while_refused(stack, "start", cid, user=user)
    time.sleep(10)
    assert {owner(run) for run in secret.parent.glob("run-*")} == {ALICE, BOB}
    assert_every_run_as_its_owner(secret.parent, secret)
    for user, cid in made.items():
        error = stack.ok("inspect", "-f", "{{.State.Error}}", cid, user=user)
        assert error.strip() == "" or "different identities at once" in error, error
    stack.ok("rm", "-f", made["alice"], "alice-loop-svc", user="alice")
    stack.ok("rm", "-f", made["bob"], user="bob")


def test_a_restart_of_a_container_nobody_owns_is_refused_with_a_message(stack: E2E) -> None:
    """A container whose owner fixeduser lost (its record deleted) is not mounted for anyone when the daemon
    restarts it: the restart fails and the daemon shows why."""
    volume = "eng-orphan"
    stack.ok("volume", "create", "-d", stack.driver, volume, user="alice")
    cid = run_always(stack, volume, "sleep 2; " + CRASH_LOOP, "alice")
    stack.plugin.stop()
    with sqlite3.connect(stack.plugin.state_dir / "state.db") as db:
        db.execute("DELETE FROM containers WHERE id = ?", (cid,))
    stack.plugin.start()

    def refused() -> bool:
        state = json.loads(stack.ok("inspect", "-f", "{{json .State}}", cid))
        return state["Status"] == "exited" and "was not created through fixeduser" in state["Error"]

    stack.wait(refused, "the daemon's restart to be refused", within=60)
    backing = stack.plugin.local_root / volume
    assert {owner(run) for run in backing.glob("run-*")} <= {ALICE}, "only alice's own start may have run"
    stack.ok("rm", "-f", cid)


def test_daemon_restart_brings_back_both_owners_containers(stack: E2E) -> None:
    """dockerd restarts with alice's and bob's `--restart=always` containers on one volume: both run again, each as
    its owner, and the daemon's API comes up without waiting on fixeduser."""
    volume = "eng-reboot"
    secret = alices_secret_service(stack, volume, "alice-boot-svc")
    backing = secret.parent
    boot = f"touch {RUN_FILE}; exec sleep 600"
    made = {user: run_always(stack, volume, boot, user) for user in ("alice", "bob")}
    stack.wait(lambda: len(list(backing.glob("run-*"))) == 2, "both containers to run")
    dockerd = stack.stack.dockerd
    dockerd.stop()
    started = time.monotonic()
    dockerd.start()
    api_up = time.monotonic() - started
    # Not a speed target: a plugin that waited for the daemon's API during the restore held it up by at least one
    # look-up timeout (10 s) per mount.
    assert api_up < LOOKUP_TIMEOUT, f"the daemon's API took {api_up:.1f} s"

    def running(cid: str, user: str) -> bool:
        return stack.ok("inspect", "-f", "{{.State.Running}}", cid, user=user).strip() == "true"

    for user, cid in made.items():
        stack.wait(lambda cid=cid, user=user: running(cid, user), f"{user}'s container to run again")
    stack.wait(lambda: len(list(backing.glob("run-*"))) == 4, "both containers to write again")
    assert sorted(owner(run) for run in backing.glob("run-*")) == [ALICE, ALICE, BOB, BOB]
    assert_every_run_as_its_owner(backing, secret)
    log = stack.plugin.log_tail(400)
    assert "started a container the daemon could not restart" in log, log
    for user, cid in made.items():
        stack.ok("rm", "-f", cid, user=user)
    stack.ok("rm", "-f", "alice-boot-svc", user="alice")
