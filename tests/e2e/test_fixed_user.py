"""Fixed-user volumes through a real dockerd, real TLS users and real bindfs mounts."""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import E2E

RUN = ("run", "--rm", "--network", "none")
ALICE, BOB = (10001, 10000), (10002, 10000)


def owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


def make_volume(stack: E2E, name: str, *, user: str = "alice", opts: tuple[str, ...] = ()) -> Path:
    stack.ok("volume", "create", "-d", stack.driver, *opts, name, user=user)
    return stack.plugin.local_root / name


def test_each_user_writes_as_their_own_identity(stack: E2E) -> None:
    """alice and bob mounting the same volume each create files owned by their own uid, even as container root."""
    backing = make_volume(stack, "eng-shared")
    stack.ok(*RUN, "-v", "eng-shared:/data", "busybox:local", "touch", "/data/from-alice", user="alice")
    stack.ok(*RUN, "-v", "eng-shared:/data", "busybox:local", "touch", "/data/from-bob", user="bob")
    assert owner(backing / "from-alice") == ALICE
    assert owner(backing / "from-bob") == BOB
    assert owner(backing) == ALICE  # the creator's identity owns the top folder


def test_mode_600_file_is_private_even_to_container_root(stack: E2E) -> None:
    """A mode-600 file of alice's cannot be read by bob's container running as root; alice can read it."""
    make_volume(stack, "eng-private")
    stack.ok(*RUN, "-v", "eng-private:/data", "busybox:local", "sh", "-c",
             "echo secret > /data/s && chmod 600 /data/s", user="alice")  # fmt: skip
    result = stack.docker(*RUN, "-v", "eng-private:/data", "busybox:local", "cat", "/data/s", user="bob")
    assert result.returncode != 0 and "Permission denied" in result.stderr
    assert stack.ok(*RUN, "-v", "eng-private:/data", "busybox:local", "cat", "/data/s", user="alice") == "secret\n"
    stack.ok(*RUN, "-v", "eng-private:/data", "busybox:local", "chown", "10002:10002", "/data/s", user="bob")
    assert owner(stack.plugin.local_root / "eng-private" / "s") == ALICE  # chown changes nothing


def test_user_without_identity_is_denied_with_reason(stack: E2E) -> None:
    """carol has a role but no identity: her volume mount is denied naming her and the missing mapping."""
    make_volume(stack, "eng-carol")
    message = stack.denied(*RUN, "-v", "eng-carol:/data", "busybox:local", "true", user="carol")
    assert "carol cannot mount fixeduser volume eng-carol: carol has no fixed user or group" in message
    assert "p2, carol" in message
    assert "uid=0" in stack.ok(*RUN, "busybox:local", "id", user="carol")  # ordinary use stays allowed


def test_volume_outside_permission_is_denied(stack: E2E) -> None:
    """Creating or mounting a volume the policy does not grant names the user, volume and missing permission."""
    message = stack.denied("volume", "create", "-d", stack.driver, "ops-data", user="alice")
    assert "alice may not create fixeduser volume ops-data" in message
    assert "volume:ops-data, create" in message
    stack.ok("volume", "create", "-d", stack.driver, "ops-data")  # the admin may
    message = stack.denied(*RUN, "-v", "ops-data:/data", "busybox:local", "true", user="alice")
    assert "alice may not mount fixeduser volume ops-data" in message
    assert "ops-data" not in stack.ok("ps", "-a", "--format", "{{.Mounts}}")


def test_unknown_user_and_reserved_names_are_denied(stack: E2E) -> None:
    """A TLS user the policy does not know gets nothing; a certificate named like a policy subject is refused."""
    assert "dave may not container.list" in stack.denied("ps", user="dave")
    assert "reserved" in stack.denied("ps", user="@local")


def test_concurrent_runs_of_two_users_keep_identities(stack: E2E) -> None:
    """20 concurrent runs by alice and bob on one volume: every file is owned by the user who wrote it."""
    backing = make_volume(stack, "eng-busy")
    jobs = [("alice" if i % 2 == 0 else "bob", i) for i in range(20)]

    def run(job: tuple[str, int]) -> str:
        user, index = job
        return stack.ok(*RUN, "-v", "eng-busy:/data", "busybox:local", "sh", "-c",
                        f"touch /data/{user}-{index} && id -u", user=user, timeout=180)  # fmt: skip

    with ThreadPoolExecutor(max_workers=20) as pool:
        outputs = list(pool.map(run, jobs))
    assert outputs == ["0\n"] * 20  # container root every time...
    for user, index in jobs:  # ...yet every file has its writer's identity
        assert owner(backing / f"{user}-{index}") == (ALICE if user == "alice" else BOB), (user, index)


def test_restart_policy_restarts_keep_owner_identity(stack: E2E) -> None:
    """Restarts by the daemon itself (no API request) mount as the container owner's identity."""
    backing = make_volume(stack, "eng-restart")
    cid = stack.ok("run", "-d", "--network", "none", "--restart=on-failure:3", "-v", "eng-restart:/data",
                   "busybox:local", "sh", "-c", "echo run >> /data/log; exit 1", user="alice").strip()  # fmt: skip

    def restarted_three_times() -> bool:
        state = json.loads(stack.ok("inspect", cid, user="alice"))[0]
        return bool(state["RestartCount"] == 3 and not state["State"]["Running"] and not state["State"]["Restarting"])

    stack.wait(restarted_three_times, "three restarts by the daemon, then the end", within=60)
    assert (backing / "log").read_text() == "run\n" * 4
    assert owner(backing / "log") == ALICE
    stack.ok("rm", cid, user="alice")


def test_container_started_by_name_mounts_as_owner(stack: E2E) -> None:
    """`docker create --name` then `docker start NAME`: the mount uses the owner's identity; others may not start it."""
    backing = make_volume(stack, "eng-named")
    stack.ok("create", "--name", "alice-c1", "--network", "none", "-v", "eng-named:/data", "busybox:local",
             "touch", "/data/by-name", user="alice")  # fmt: skip
    message = stack.denied("start", "alice-c1", user="bob")
    assert "bob may not container.start alice-c1" in message and "alice's container" in message
    assert not (backing / "by-name").exists()
    stack.ok("start", "-a", "alice-c1", user="alice")
    assert owner(backing / "by-name") == ALICE
    stack.ok("rm", "alice-c1", user="alice")


def test_mount_during_create_copies_image_content_as_owner(stack: E2E) -> None:
    """The daemon's copy of image content into an empty volume of someone else's is done as the container owner."""
    backing = make_volume(stack, "eng-copyup", user="alice")
    stack.ok(*RUN, "-v", "eng-copyup:/bin", "busybox:local", "true", user="bob")
    assert (backing / "busybox").is_file()
    assert owner(backing / "busybox") == BOB
    assert owner(backing) == ALICE and backing.stat().st_mode & 0o7777 == 0o770  # top folder as configured
    stack.ok(*RUN, "-v", "eng-copyup:/data", "busybox:local", "sh", "-c",
             "echo x > /data/f && chmod 600 /data/f", user="alice")  # fmt: skip
    assert (backing / "f").stat().st_mode & 0o777 == 0o600  # later runs use the chmod-honouring view


def test_pinned_volume_lifecycle(stack: E2E) -> None:
    """Pinned volumes: create/ls/inspect/rm, and only users who may assume the pinned identity use them."""
    message = stack.denied("volume", "create", "-d", stack.driver, "-o", "user=10001", "-o", "group=10000",
                           "eng-pin-bob", user="bob")  # fmt: skip
    assert "bob may not use identity 10001:10000" in message
    backing = make_volume(stack, "eng-pinned", opts=("-o", "user=10001", "-o", "group=10000", "-o", "mode=0700"))
    assert owner(backing) == ALICE and (backing.stat().st_mode & 0o777) == 0o700
    assert "eng-pinned" in stack.ok("volume", "ls", "--format", "{{.Name}} {{.Driver}}", user="bob")
    info = json.loads(stack.ok("volume", "inspect", "eng-pinned", user="alice"))[0]
    assert info["Driver"] == stack.driver
    assert info["Status"]["identity"] == "pinned to 10001:10000" and info["Status"]["creator"] == "alice"
    stack.ok(*RUN, "-v", "eng-pinned:/data", "busybox:local", "touch", "/data/x", user="alice")
    assert owner(backing / "x") == ALICE
    message = stack.denied(*RUN, "-v", "eng-pinned:/data", "busybox:local", "true", user="bob")
    assert "bob may not use identity 10001:10000" in message
    assert "alice may not remove fixeduser volume eng-pinned" in stack.denied(
        "volume", "rm", "eng-pinned", user="alice"
    )
    stack.ok("volume", "rm", "eng-pinned")
    assert "eng-pinned" not in stack.ok("volume", "ls", "--format", "{{.Name}}")
    assert (backing / "x").exists()  # removal keeps data unless purge was asked for


def test_volume_subpath_mounts_as_the_container_owner(stack: E2E) -> None:
    """`--mount ...,volume-subpath=sub` writes as each container owner's identity; a subpath that is a link out of
    the volume is refused by the daemon."""
    if stack.engine.release < (26, 1):
        pytest.skip("dockerd 20.10 (API 1.41) has no volume subpath: it ignores it and mounts the whole volume")
    backing = make_volume(stack, "eng-subpath")
    for user in ("alice", "bob"):
        stack.ok(*RUN, "-v", "eng-subpath:/data", "busybox:local", "mkdir", f"/data/{user}", user=user)
        sub = ("--mount", f"type=volume,source=eng-subpath,target=/data,volume-subpath={user}")
        stack.ok(*RUN, *sub, "busybox:local", "touch", "/data/f", user=user)
    assert owner(backing / "alice" / "f") == ALICE and owner(backing / "bob" / "f") == BOB
    (backing / "out").symlink_to("/")
    escape = ("--mount", "type=volume,source=eng-subpath,target=/data,volume-subpath=out")
    assert "escapes the base directory" in stack.denied(*RUN, *escape, "busybox:local", "true", user="alice")


def test_invalid_volume_options_list_the_valid_ones(stack: E2E) -> None:
    """Unknown or malformed options are rejected with a message listing the valid options."""
    message = stack.denied("volume", "create", "-d", stack.driver, "-o", "colour=red", "eng-bad", user="alice")
    assert "unknown fixeduser volume option(s) colour" in message and "user (" in message and "purge (" in message
    message = stack.denied("volume", "create", "-d", stack.driver, "-o", "user=10001", "eng-bad", user="alice")
    assert "needs both" in message
    assert "eng-bad" not in stack.ok("volume", "ls", "--format", "{{.Name}}")


def test_anonymous_fixeduser_volumes_are_refused(stack: E2E) -> None:
    """`--volume-driver fixeduser -v /path` would create a nameless volume nobody owns: refused."""
    message = stack.denied(*RUN, "--volume-driver", stack.driver, "-v", "/data", "busybox:local", "true", user="alice")
    assert "anonymous fixeduser volumes" in message


def test_volume_in_use_cannot_be_removed_and_mounts_are_counted(stack: E2E) -> None:
    """A volume used by a running container is refused removal; the identity view goes when the last user stops."""
    make_volume(stack, "eng-inuse")
    cid = stack.ok("run", "-d", "--network", "none", "-v", "eng-inuse:/data", "busybox:local", "sleep", "60",
                   user="alice").strip()  # fmt: skip
    info = json.loads(stack.ok("volume", "inspect", "eng-inuse"))[0]
    assert info["Status"]["mounts"] == {"10001:10000": 1}
    assert "in use" in stack.denied("volume", "rm", "eng-inuse")
    stack.ok("rm", "-f", cid, user="alice")
    info = json.loads(stack.ok("volume", "inspect", "eng-inuse"))[0]
    assert info["Status"]["mounts"] == {}
    stack.ok("volume", "rm", "eng-inuse")


@pytest.mark.parametrize("flag", [["--privileged"], ["-v", "/etc:/host-etc"], ["--pid", "host"]])
def test_escalations_are_denied_to_engineers(stack: E2E, flag: list[str]) -> None:
    """Privileged mode, host binds and host namespaces need an explicit policy grant."""
    message = stack.denied(*RUN, *flag, "busybox:local", "true", user="alice")
    assert "alice may not create a container with" in message and "escalation" in message


def test_binding_the_backing_storage_is_denied(stack: E2E) -> None:
    """A bind of the local root would bypass the fixed-user view: it is a protected escalation."""
    message = stack.denied(*RUN, "-v", f"{stack.plugin.local_root}:/x", "busybox:local", "true", user="alice")
    assert "protected-bind" in message


def test_audit_lines_have_no_secrets(stack: E2E) -> None:
    """Every decision is an audit JSON line naming user, action and result, without request bodies."""
    stack.ok(*RUN, "-e", "TOKEN=hunter2", "busybox:local", "true", user="alice")
    stack.wait(lambda: "container.create" in stack.plugin.audit_path.read_text(), "the audit line", within=5)
    text = stack.plugin.audit_path.read_text()
    assert "hunter2" not in text
    records = [json.loads(line) for line in text.splitlines()]
    creates = [r for r in records if r["action"] == "container.create" and r["user"] == "alice"]
    assert all(r["auth"] == "TLS" and r["policy"] for r in creates)
    allowed = [r for r in creates if r["allow"] and r["phase"] == "request"]
    assert allowed and all(r["rule"] and "container.*" in r["rule"] for r in allowed)
    denied = [r for r in creates if not r["allow"]]
    assert denied and all(r["reason"].startswith("alice may not") for r in denied)


def test_no_stray_bindfs_views(stack: E2E) -> None:
    """After all containers stopped, no identity view stays mounted past its idle grace (counts reached zero)."""
    assert stack.ok("ps", "-q").strip() == ""
    mnt = str(stack.plugin.state_dir / "mnt")
    deadline = time.monotonic() + 10
    while mnt in Path("/proc/self/mountinfo").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mnt not in Path("/proc/self/mountinfo").read_text()


def test_auto_removed_containers_leave_the_ledger(stack: E2E, tmp_path: Path) -> None:
    """`docker run --rm` containers are removed by the daemon itself; the ownership ledger forgets them too, once the
    daemon no longer lists them."""

    def recorded(ids: set[str]) -> set[str]:
        with sqlite3.connect(f"file:{stack.plugin.state_dir / 'state.db'}?mode=ro", uri=True) as db:
            return {row[0] for row in db.execute("SELECT id FROM containers") if row[0] in ids}

    ids = set()
    for run in range(3):
        cidfile = tmp_path / f"cid{run}"
        stack.ok(*RUN, "--cidfile", str(cidfile), "busybox:local", "true", user="alice")
        ids.add(cidfile.read_text().strip())
    assert len(ids) == 3
    kept = stack.ok("create", "--network", "none", "busybox:local", "true", user="alice").strip()
    stack.wait(lambda: recorded({kept}) == {kept}, "the created container's owner to be recorded", within=5)
    stack.wait(lambda: not recorded(ids), "the removed containers to be forgotten", within=15)
    assert recorded({kept}) == {kept}
    stack.ok("rm", kept, user="alice")
