"""An Authorizer wired like app.py: the shipped example policy, a temp SQLite ledger, and the real
DaemonClient talking to one private dockerd shared by the session (fixeduser.sandbox: own paths,
`--bridge=none --iptables=false --ip6tables=false`, stopped by its PID, mounts cleaned).

Tests that need the daemon to know a volume or container create the real thing on it
(`Harness.real_volume`, `Harness.real_container`); both are removed when the test ends.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fixeduser.authz.audit import AuditRecord
from fixeduser.authz.authorizer import Authorizer
from fixeduser.authz.decision import Verdict
from fixeduser.authz.wire import AuthZRequest
from fixeduser.docker_api.daemon import DaemonClient, DaemonError, InspectedNetwork, InspectedTask
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.identity import Identity
from fixeduser.policy.store import load_policy
from fixeduser.sandbox import BUSYBOX_IMAGE, Dockerd, Engine, dockerd_available, make_private_dir, mounts_under
from fixeduser.state.handoff import MountGate
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.records import VolumeRecord
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.store import StateStore

from .other_driver import OtherDriver

REPO = Path(__file__).resolve().parents[2]
DRIVER = "fixeduser"
POLICY: CompiledPolicy = load_policy(REPO / "policies")


class ListAuditor:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)


@dataclass
class RealDaemon:
    """The session's private dockerd, and what one test made on it (removed when the test ends)."""

    dockerd: Dockerd
    image: str
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def ok(self, *args: str) -> str:
        result = self.dockerd.docker(*args)
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    def volume(self, prefix: str, *options: str) -> str:
        """A real volume named `prefix-<random>` created with `docker volume create OPTIONS`."""
        name = self.ok("volume", "create", *options, f"{prefix}-{secrets.token_hex(4)}")
        self.volumes.append(name)
        return name

    def container(self, name: str = "") -> str:
        """A real (never started) container with no network; its full ID. Unnamed: the daemon picks a name."""
        named = ["--name", f"{name}-{secrets.token_hex(4)}"] if name else []
        cid = self.ok("create", "--network", "none", *named, self.image, "true")
        self.containers.append(cid)
        return cid

    def name_of(self, cid: str) -> str:
        return self.ok("inspect", "-f", "{{.Name}}", cid).lstrip("/")

    def network_id(self, name: str) -> str:
        return self.ok("network", "inspect", "-f", "{{.Id}}", name)

    def cleanup(self) -> None:
        if self.containers:
            self.dockerd.docker("rm", "-f", *self.containers)
        if self.volumes:
            self.dockerd.docker("volume", "rm", "-f", *self.volumes)


# The networks every daemon has, as `GET /networks/{id}` describes them (IDs made up, 64 hex digits).
PREDEFINED_NETWORKS = {
    name: {"Id": digit * 64, "Name": name, "Driver": driver}
    for name, digit, driver in (("none", "1", "null"), ("host", "2", "host"), ("bridge", "3", "bridge"))
}


@dataclass
class KnownContainers:
    """The daemon as a test describes it: containers (fake IDs) and volumes it made up, answered the way the
    daemon would; every other look-up goes to `daemon` (the session's real dockerd) or, without one, is answered
    like a daemon that has nothing else (the predefined networks, no swarm). Container references resolve like
    dockerd's: full ID, exact name with or without `/`, then a unique ID prefix."""

    daemon: DaemonClient | None
    described: dict[str, dict[str, Any]] = field(default_factory=dict)  # full ID -> inspect answer
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> inspect answer
    token: str = ""

    def __post_init__(self) -> None:
        self.token = self.daemon.token if self.daemon else ""

    def add(self, cid: str, name: str, body: dict[str, Any], our_volumes: set[str]) -> None:
        host = {k.lower(): v for k, v in (body.get("HostConfig") or {}).items()}
        named = [b.split(":")[0] for b in host.get("binds") or [] if not b.startswith("/")]
        mounts = [{"Type": "volume", "Name": v, "Driver": DRIVER if v in our_volumes else "local"} for v in named]
        self.described[cid] = {"Id": cid, "Name": f"/{name}", "HostConfig": body.get("HostConfig") or {},
                               "Mounts": mounts, "State": {"Status": "created"}}  # fmt: skip

    def resolve(self, reference: str) -> dict[str, Any] | None:
        if reference in self.described:
            return self.described[reference]
        for described in self.described.values():
            if described["Name"] == "/" + reference.removeprefix("/"):
                return described
        matches = [d for cid, d in self.described.items() if reference and cid.startswith(reference)]
        return matches[0] if len(matches) == 1 else None

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        known = self.resolve(reference)
        if known is not None or self.daemon is None:
            return known
        return await self.daemon.inspect_container(reference)

    async def inspect_new_container(self, container_id: str) -> dict[str, Any] | None:
        return await self.inspect_container(container_id)

    async def container_ids(self) -> set[str]:
        return set(self.described) | (await self.daemon.container_ids() if self.daemon else set())

    def add_volume(self, name: str, driver: str = "local", options: dict[str, str] | None = None) -> None:
        self.volumes[name] = {"Name": name, "Driver": driver, "Options": options}

    async def inspect_volume(self, name: str) -> dict[str, Any] | None:
        if name in self.volumes or self.daemon is None:
            return self.volumes.get(name)
        return await self.daemon.inspect_volume(name)

    async def inspect_network(self, reference: str) -> InspectedNetwork | None:
        if self.daemon is not None:
            return await self.daemon.inspect_network(reference)
        matches = [n for n in PREDEFINED_NETWORKS.values() if reference in (n["Name"], n["Id"])]
        matches = matches or [n for n in PREDEFINED_NETWORKS.values() if reference and n["Id"].startswith(reference)]
        return InspectedNetwork.model_validate(matches[0]) if len(matches) == 1 else None

    async def inspect_task(self, reference: str) -> InspectedTask | None:
        if self.daemon is None:
            raise DaemonError("daemon answered 503 to GET /tasks: this node is not a swarm manager")
        return await self.daemon.inspect_task(reference)


@dataclass
class SessionDaemon:
    dockerd: Dockerd
    other_driver: OtherDriver


@pytest.fixture(scope="session")
def session_daemon(engine: Engine) -> Iterator[SessionDaemon]:
    """One private dockerd of each engine (no network, unix socket only) with the busybox image, which finds plugins
    in a spec folder of its own (the other stacks' drivers are not its business, nor its driver theirs), and a volume
    driver that is not fixeduser's there. The driver answers until the daemon stops: a daemon that has used a legacy
    plugin asks it about every volume name it does not know (measured: 15 s per look-up once the plugin is gone)."""
    if os.geteuid() != 0 or not dockerd_available():
        pytest.skip("needs root and dockerd (run scripts/setup)")
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fu-authz-")
    specs = base / "plugins"
    specs.mkdir()
    daemon = Dockerd(base / "dockerd", engine=engine, plugin_specs=specs)
    other = OtherDriver(base / "other", spec_dir=specs)
    try:
        other.start()
        daemon.start()
        daemon.import_busybox()
        yield SessionDaemon(daemon, other)
    finally:
        daemon.stop()
        other.stop()
        if not mounts_under(base):  # never delete through a mount
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd(session_daemon: SessionDaemon) -> Dockerd:
    return session_daemon.dockerd


@pytest.fixture
def other_driver(session_daemon: SessionDaemon) -> Iterator[OtherDriver]:
    """The session daemon's volume driver that is not fixeduser's; the volumes a test made with it are removed."""
    driver = session_daemon.other_driver
    before = set(driver.options)
    yield driver
    made = sorted(set(driver.options) - before)
    if made:
        session_daemon.dockerd.docker("volume", "rm", "-f", *made)


def raw_body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def b64(value: Any) -> str:
    return base64.b64encode(raw_body(value)).decode()


@dataclass
class Harness:
    authorizer: Authorizer
    ledger: ContainerLedger
    registry: VolumeRegistry
    daemon: RealDaemon | None
    auditor: ListAuditor
    protected: Path
    policy: list[CompiledPolicy]
    known: KnownContainers

    @property
    def real(self) -> RealDaemon:
        assert self.daemon is not None, "this harness has no daemon"
        return self.daemon

    def add_policy_lines(self, tmp: Path, lines: str) -> None:
        """Decide with the example policy plus `lines` from now on."""
        folder = tmp / "extra-policy"
        folder.mkdir(exist_ok=True)
        (folder / "model.conf").write_text((REPO / "policies" / "model.conf").read_text())
        (folder / "policy.csv").write_text((REPO / "policies" / "policy.csv").read_text() + lines)
        self.policy[0] = load_policy(folder)

    @staticmethod
    def request(
        method: str,
        uri: str,
        *,
        user: str = "alice",
        body: Any = None,
        status: int = 0,
        response: Any = None,
        headers: dict[str, str] | None = None,
    ) -> AuthZRequest:
        """An AuthZ request as the daemon sends it: a Content-Length header (0 without a body) unless
        `headers` replaces the headers; a JSON body is shown."""
        payload: dict[str, Any] = {"RequestMethod": method, "RequestUri": uri}
        if user:
            payload |= {"User": user, "UserAuthNMethod": "TLS"}
        payload["RequestHeaders"] = {"Content-Length": "0"}
        if body is not None:
            payload["RequestBody"] = b64(body)
            payload["RequestHeaders"] = {"Content-Type": "application/json", "Content-Length": str(len(raw_body(body)))}
        if headers is not None:
            payload["RequestHeaders"] = headers
        if status:
            payload["ResponseStatusCode"] = status
        if response is not None:
            payload["ResponseBody"] = b64(response)
        return AuthZRequest.from_wire(payload)

    async def ask(
        self, method: str, uri: str, *, user: str = "alice", body: Any = None, headers: dict[str, str] | None = None
    ) -> Verdict:
        return await self.authorizer.authorize_request(self.request(method, uri, user=user, body=body, headers=headers))

    async def respond(
        self, method: str, uri: str, *, user: str = "alice", body: Any = None, status: int, response: Any
    ) -> Verdict:
        request = self.request(method, uri, user=user, body=body, status=status, response=response)
        return await self.authorizer.authorize_response(request)

    async def create_container(self, user: str, name: str, cid: str, body: Any = None) -> None:
        """A container create allowed and recorded as the daemon would drive it."""
        body = body if body is not None else {"Image": "busybox", "HostConfig": {"NetworkMode": "none"}}
        uri = f"/v1.41/containers/create?name={name}"
        verdict = await self.ask("POST", uri, user=user, body=body)
        assert verdict.allow, verdict.message
        verdict = await self.respond("POST", uri, user=user, body=body, status=201, response={"Id": cid})
        assert verdict.allow, verdict.message
        self.known.add(cid, name, body, set(self.registry.names()))

    def remove_container(self, cid: str) -> None:
        """The daemon removed a made-up container."""
        del self.known.described[cid]

    async def add_volume(self, name: str, creator: str = "alice") -> None:
        ident = Identity(uid=10001, gid=10000, user="10001", group="10000")
        await self.registry.add(
            VolumeRecord(
                name=name, creator=creator, owner=ident, pinned=None, mode=0o770, purge=False,
                created_at="2024-01-01T00:00:00Z", options={},
            )
        )  # fmt: skip


def make_harness(
    tmp: Path, client: DaemonClient | None = None, real: RealDaemon | None = None, *, daemon: bool = True
) -> tuple[Harness, StateStore]:
    """An Authorizer over a fresh ledger and registry. It asks `client` (a real daemon) what the test did not make
    up; `daemon=False`: it has no daemon connection at all."""
    store = StateStore(tmp / "state.db")
    ledger, registry, gate = ContainerLedger(store), VolumeRegistry(store), MountGate(wait_seconds=0.2)
    auditor = ListAuditor()
    protected = tmp / "protected"
    (protected / "root").mkdir(parents=True)
    current = [POLICY]
    known = KnownContainers(client)
    authorizer = Authorizer(
        policy=lambda: current[0],
        ledger=ledger,
        registry=registry,
        gate=gate,
        auditor=auditor,
        driver_name=DRIVER,
        protected_paths=[protected / "root"],
        daemon=known if daemon else None,
    )
    return Harness(authorizer, ledger, registry, real, auditor, protected, current, known), store


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A harness whose daemon is what the test makes up (no root, no dockerd): the decision logic alone."""
    made, store = make_harness(tmp_path)
    try:
        yield made
    finally:
        store.close()


@pytest.fixture
async def real_harness(tmp_path: Path, dockerd: Dockerd) -> AsyncIterator[Harness]:
    """A harness whose look-ups go to the session's real dockerd through the real DaemonClient."""
    client = DaemonClient(dockerd.host)
    real = RealDaemon(dockerd, image=BUSYBOX_IMAGE)
    made, store = make_harness(tmp_path, client, real)
    try:
        yield made
    finally:
        store.close()
        await client.close()
        real.cleanup()
