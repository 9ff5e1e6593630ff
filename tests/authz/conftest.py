"""An Authorizer wired like app.py: the shipped example policy, a temp SQLite ledger, a fake daemon."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from fixeduser.authz.audit import AuditRecord
from fixeduser.authz.authorizer import Authorizer, Verdict
from fixeduser.authz.ledger import ContainerLedger
from fixeduser.authz.wire import AuthZRequest
from fixeduser.daemon import DaemonClient
from fixeduser.handoff import MountGate
from fixeduser.identity import Identity
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.store import load_policy
from fixeduser.state import StateStore
from fixeduser.volumes.registry import VolumeRecord, VolumeRegistry

REPO = Path(__file__).resolve().parents[2]
DRIVER = "fixeduser"
POLICY: CompiledPolicy = load_policy(REPO / "policies")


class ListAuditor:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)


@dataclass
class FakeDaemon:
    """The daemon's answers to fixeduser's own look-ups: volumes by name, containers by reference."""

    token: str = "t0ken"
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def inspect_volume(self, name: str) -> dict[str, Any] | None:
        return self.volumes.get(name)

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        return self.containers.get(reference)


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


@dataclass
class Harness:
    authorizer: Authorizer
    ledger: ContainerLedger
    registry: VolumeRegistry
    daemon: FakeDaemon
    auditor: ListAuditor
    protected: Path
    policy: list[CompiledPolicy]

    def add_policy_lines(self, tmp: Path, lines: str) -> None:
        """Decide with the example policy plus `lines` from now on."""
        folder = tmp / "extra-policy"
        folder.mkdir(exist_ok=True)
        (folder / "model.conf").write_text((REPO / "policies" / "model.conf").read_text())
        (folder / "policy.csv").write_text((REPO / "policies" / "policy.csv").read_text() + lines)
        self.policy[0] = load_policy(folder)

    @staticmethod
    def request(
        method: str, uri: str, *, user: str = "alice", body: Any = None, status: int = 0, response: Any = None
    ) -> AuthZRequest:
        payload: dict[str, Any] = {"RequestMethod": method, "RequestUri": uri}
        if user:
            payload |= {"User": user, "UserAuthNMethod": "TLS"}
        if body is not None:
            payload["RequestBody"] = b64(body)
            payload["RequestHeaders"] = {"Content-Type": "application/json"}
        if status:
            payload["ResponseStatusCode"] = status
        if response is not None:
            payload["ResponseBody"] = b64(response)
        return AuthZRequest.model_validate(payload)

    async def ask(self, method: str, uri: str, *, user: str = "alice", body: Any = None) -> Verdict:
        return await self.authorizer.authorize_request(self.request(method, uri, user=user, body=body))

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

    async def add_volume(self, name: str, creator: str = "alice") -> None:
        ident = Identity(uid=10001, gid=10000, user="10001", group="10000")
        await self.registry.add(
            VolumeRecord(
                name=name, creator=creator, owner=ident, pinned=None, mode=0o770, purge=False,
                created_at="2024-01-01T00:00:00Z", options={},
            )
        )  # fmt: skip


def make_harness(tmp: Path, *, daemon: bool = True) -> tuple[Harness, StateStore]:
    store = StateStore(tmp / "state.db")
    ledger, registry, gate = ContainerLedger(store), VolumeRegistry(store), MountGate(wait_seconds=0.2)
    fake = FakeDaemon()
    auditor = ListAuditor()
    protected = tmp / "protected"
    (protected / "root").mkdir(parents=True)
    current = [POLICY]
    authorizer = Authorizer(
        policy=lambda: current[0],
        ledger=ledger,
        registry=registry,
        gate=gate,
        auditor=auditor,
        driver_name=DRIVER,
        protected_paths=[protected / "root"],
        daemon=cast(DaemonClient, fake) if daemon else None,
    )
    return Harness(authorizer, ledger, registry, fake, auditor, protected, current), store


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made, store = make_harness(tmp_path)
    try:
        yield made
    finally:
        store.close()
