"""Two hosts on one machine: two private dockerds, two `fixeduser serve` (each its own state folder and sockets),
one real PostgreSQL and one shared backing folder (the local backend over shared storage)."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixeduser.commands.status import fetch_status
from fixeduser.sandbox import Engine, make_private_dir, start_stack
from tests.policy.postgres import Postgres

from ..quobyte_api import QuobyteApiDouble
from .conftest import E2E, E2E_USERS, REPO

RUN = ("run", "--rm", "--network", "none")
DETACHED = ("run", "-d", "--network", "none")
ALICE = (10001, 10000)
LEASE = 3.0


@dataclass
class TwoHosts:
    a: E2E
    b: E2E
    shared: Path  # the storage both hosts' volumes live in

    def owner_and_mode(self, volume: str) -> tuple[int, int, int]:
        info = (self.shared / volume).stat()
        return info.st_uid, info.st_gid, info.st_mode & 0o7777

    def cluster(self, host: E2E) -> dict[str, object]:
        status: dict[str, object] = fetch_status(host.plugin.state_dir / "control.sock")["cluster"]
        return status


def _start_two_hosts(
    workdir: Path, engine: Engine, url: str, backend: tuple[str, ...] = (), shared: Path | None = None
) -> Iterator[TwoHosts]:
    shared = shared or workdir / "shared"
    stacks: list[E2E] = []
    try:
        for name in ("a", "b"):
            base = make_private_dir(workdir, prefix=f"host-{name}-")
            shutil.copytree(REPO / "policies", base / "policies")
            extra = ("--view-idle-seconds", "1", "--state-database", url, "--host-id", f"host-{name}",
                     "--local-root", str(shared), "--lease-seconds", str(LEASE), *backend)  # fmt: skip
            stacks.append(E2E(start_stack(base, policy_dir=base / "policies", users=E2E_USERS, extra_args=extra,
                                          engine=engine, own_plugin_specs=True)))  # fmt: skip
        yield TwoHosts(a=stacks[0], b=stacks[1], shared=shared)
    finally:
        for stack in reversed(stacks):
            stack.stack.stop()


@pytest.fixture
def two_hosts(workdir: Path, engine: Engine, postgres: Postgres) -> Iterator[TwoHosts]:
    yield from _start_two_hosts(workdir, engine, postgres.create_database(f"h{secrets.token_hex(4)}"))


def test_a_volume_is_one_volume_on_both_hosts(two_hosts: TwoHosts) -> None:
    """Created and pinned on A: listed, inspected and mounted with the pin on B; bob is refused on B as on A;
    `rm` on A is refused while B's container runs, and works once it stops; B then no longer lists it."""
    a, b = two_hosts.a, two_hosts.b
    a.ok("volume", "create", "-d", a.driver, "-o", "user=10001", "-o", "group=10000", "-o", "mode=0750",
         "-o", "purge=true", "eng-pinned", user="alice")  # fmt: skip
    b.wait(lambda: "eng-pinned" in b.ok("volume", "ls", "--format", "{{.Name}}"), "B to list eng-pinned")
    info = json.loads(b.ok("volume", "inspect", "eng-pinned", user="bob"))[0]
    assert info["Status"]["identity"] == "pinned to 10001:10000" and info["Status"]["creator"] == "alice"
    assert info["Status"]["mode"] == "0750" and info["Status"]["purge_on_remove"] is True
    b.ok(*RUN, "-v", "eng-pinned:/data", "busybox:local", "sh", "-c", "echo from-b > /data/b", user="alice")
    assert (two_hosts.shared / "eng-pinned" / "b").stat().st_uid == ALICE[0]
    assert "bob may not use identity 10001:10000" in b.denied(*RUN, "-v", "eng-pinned:/data", "busybox:local",
                                                               "true", user="bob")  # fmt: skip
    holder = b.ok(*DETACHED, "-v", "eng-pinned:/data", "busybox:local", "sleep", "120", user="alice").strip()
    message = a.denied("volume", "rm", "eng-pinned")
    assert "in use by 1 container mount(s) on host(s) host-b" in message, message
    assert (two_hosts.shared / "eng-pinned" / "b").read_text() == "from-b\n"  # the purge did not happen
    b.ok("rm", "-f", holder, user="alice")
    a.ok("volume", "rm", "eng-pinned")
    assert not (two_hosts.shared / "eng-pinned").exists()  # purged, now that nobody uses it
    b.wait(lambda: "eng-pinned" not in b.ok("volume", "ls", "--format", "{{.Name}}"), "B to drop eng-pinned")


def test_the_top_folder_keeps_its_recorded_owner_and_mode_whatever_each_host_mounts(two_hosts: TwoHosts) -> None:
    """alice's volume (mode 0770) mounted by bob's image copy on B (B's first word of it) and alice's containers
    on A, at the same time: the top folder is alice's with 0770 afterwards; both wrote as their owners."""
    a, b = two_hosts.a, two_hosts.b
    a.ok("volume", "create", "-d", a.driver, "eng-both", user="alice")
    assert two_hosts.owner_and_mode("eng-both") == (*ALICE, 0o770)
    # Right away, and without --volume-driver: B's daemon asks its drivers for the name, and B's fixeduser reads
    # the record A wrote (never an empty local volume in its place). The image's /etc is copied into the empty
    # volume as bob on B (the top folder lent to bob meanwhile).
    bob = b.ok(*DETACHED, "-v", "eng-both:/bin", "busybox:local", "sh", "-c", "touch /bin/by-bob; sleep 120",
               user="bob").strip()  # fmt: skip
    assert b.ok("volume", "inspect", "--format", "{{.Driver}}", "eng-both").strip() == b.driver
    assert (two_hosts.shared / "eng-both" / "busybox").stat().st_uid == 10002  # copied into the shared storage
    b.wait((two_hosts.shared / "eng-both" / "by-bob").exists, "bob's file on B")
    for i in range(3):  # alice's mounts and unmounts on A end with a top-folder restore each
        a.ok(*RUN, "-v", "eng-both:/data", "busybox:local", "touch", f"/data/by-alice-{i}", user="alice")
    assert (two_hosts.shared / "eng-both" / "by-bob").stat().st_uid == 10002
    assert (two_hosts.shared / "eng-both" / "by-alice-2").stat().st_uid == ALICE[0]
    b.ok("rm", "-f", bob, user="bob")
    b.wait(lambda: two_hosts.owner_and_mode("eng-both") == (*ALICE, 0o770), "the top folder back to alice, 0770")


def test_a_dead_hosts_mounts_stop_counting_after_its_lease(two_hosts: TwoHosts) -> None:
    """B's plugin killed while its container holds the volume: A's rm is refused until B's lease ran out; when
    B's plugin comes back it takes the shared records (the volume is gone) and its lease again."""
    a, b = two_hosts.a, two_hosts.b
    a.ok("volume", "create", "-d", a.driver, "eng-lease", user="alice")
    b.wait(lambda: "eng-lease" in b.ok("volume", "ls", "--format", "{{.Name}}"), "B to list eng-lease")
    b.ok(*DETACHED, "-v", "eng-lease:/data", "busybox:local", "sleep", "120", user="alice")
    b.plugin.kill()
    assert "on host(s) host-b" in a.denied("volume", "rm", "eng-lease")
    started = time.monotonic()
    a.wait(lambda: a.docker("volume", "rm", "eng-lease").returncode == 0, "rm on A once B's lease ran out",
           within=LEASE + 10)  # fmt: skip
    print(f"B's mounts stopped counting {time.monotonic() - started:.1f} s after it died (lease {LEASE} s)")
    assert (two_hosts.shared / "eng-lease").exists()  # not purged: purge was not asked for
    b.plugin.start()
    b.wait(lambda: two_hosts.cluster(b)["available"] is True, "B back in the cluster")
    assert "eng-lease" not in b.ok("volume", "ls", "--format", "{{.Name}}")


@pytest.fixture
def hosts_on_own_database(workdir: Path, engine: Engine, own_postgres: Postgres) -> Iterator[TwoHosts]:
    yield from _start_two_hosts(workdir, engine, own_postgres.url)


def test_the_database_away_stops_creates_not_mounts(hosts_on_own_database: TwoHosts, own_postgres: Postgres) -> None:
    """PostgreSQL stopped: known volumes mount on both hosts, a create fails saying why; back, both hosts agree
    again (a create on A is listed by B)."""
    hosts = hosts_on_own_database
    a, b = hosts.a, hosts.b
    a.ok("volume", "create", "-d", a.driver, "eng-known", user="alice")
    b.wait(lambda: "eng-known" in b.ok("volume", "ls", "--format", "{{.Name}}"), "B to list eng-known")
    own_postgres.halt()
    for host in (a, b):
        host.ok(*RUN, "-v", "eng-known:/data", "busybox:local", "touch", f"/data/{id(host)}", user="alice")
    message = a.denied("volume", "create", "-d", a.driver, "eng-new", user="alice")
    assert "needs the shared volume database" in message and "cannot be reached" in message, message
    health = fetch_status(a.plugin.state_dir / "control.sock")["cluster"]
    assert health["available"] is False
    own_postgres.resume()
    for host in (a, b):
        host.wait(lambda h=host: hosts.cluster(h)["available"] is True, "the host back in the cluster", within=15)
    a.ok("volume", "create", "-d", a.driver, "eng-new", user="alice")
    b.wait(lambda: "eng-new" in b.ok("volume", "ls", "--format", "{{.Name}}"), "B to list eng-new", within=5)
    assert len(list((hosts.shared / "eng-known").iterdir())) == 2


@dataclass
class QuobyteHosts:
    hosts: TwoHosts
    api: QuobyteApiDouble


@pytest.fixture
def quobyte_hosts(workdir: Path, engine: Engine, postgres: Postgres) -> Iterator[QuobyteHosts]:
    """Both hosts on one Quobyte (the API test double; one folder stands in for the client mount of each host)."""
    client_dir = workdir / "quobyte-client"
    client_dir.mkdir()
    api = QuobyteApiDouble(client_dir=client_dir, mapped=[("10001", "10000"), ("10002", "10000")]).start()
    password = workdir / "quobyte-password"
    password.write_text("secret\n")
    password.chmod(0o600)
    backend = ("--backend", "quobyte", "--quobyte-api-url", api.url, "--quobyte-password-file", str(password),
               "--quobyte-mountpoint", str(client_dir), "--quobyte-client", "directory",
               "--quobyte-tenant", "t1")  # fmt: skip
    url = postgres.create_database(f"q{secrets.token_hex(4)}")
    try:
        for hosts in _start_two_hosts(workdir, engine, url, backend, shared=client_dir):
            yield QuobyteHosts(hosts, api)
    finally:
        api.stop()


def test_a_quobyte_volume_is_one_volume_on_both_hosts(quobyte_hosts: QuobyteHosts) -> None:
    """Created on A in tenant t2 with a pin and purge: B mounts its fixed-user path with the pin, never creates it
    again; a purge on A waits for B's container, then erases the volume once, in its tenant."""
    a, b, api = quobyte_hosts.hosts.a, quobyte_hosts.hosts.b, quobyte_hosts.api
    client = quobyte_hosts.hosts.shared
    a.ok("volume", "create", "-d", a.driver, "-o", "tenant=t2", "-o", "user=10001", "-o", "group=10000",
         "-o", "purge=true", "eng-q", user="alice")  # fmt: skip
    holder = b.ok(*DETACHED, "-v", "eng-q:/data", "busybox:local", "sh", "-c", "echo hi > /data/hello; sleep 120",
                  user="alice").strip()  # fmt: skip
    info = json.loads(b.ok("volume", "inspect", "eng-q"))[0]
    assert info["Mountpoint"] == str(client / "10001#10000@eng-q") and info["Driver"] == b.driver
    b.wait((client / "eng-q" / "hello").exists, "alice's file through B's fixed-user path")
    assert api.methods().count("createVolume") == 1  # B took A's record; it never created the volume again
    assert "on host(s) host-b" in a.denied("volume", "rm", "eng-q")
    assert "eraseVolume" not in api.methods() and api.has("t2", "eng-q")
    b.ok("rm", "-f", holder, user="alice")
    a.ok("volume", "rm", "eng-q")
    assert api.methods().count("eraseVolume") == 1 and not api.has("t2", "eng-q")
    b.wait(lambda: "eng-q" not in b.ok("volume", "ls", "--format", "{{.Name}}"), "B to drop eng-q")
