"""Run API requests through a real `Authorizer` built from a policy, without any daemon.

State (containers, volumes) lives in a throw-away database; what the command refers to is
assumed to exist: named volumes as fixeduser volumes, containers as owned by `container_owner`
(a stand-in daemon knows them by name and ID; it can answer nothing else).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixeduser.admin.dockercli import ApiCall
from fixeduser.app.serve import build_authorizer
from fixeduser.app.settings import ServeSettings
from fixeduser.authz.audit import AuditRecord
from fixeduser.authz.wire import AuthZRequest
from fixeduser.docker_api import parse_container_create
from fixeduser.docker_api.daemon import DaemonError, InspectedNetwork, InspectedTask
from fixeduser.policy.compiled import LOCAL_SUBJECT, CompiledPolicy
from fixeduser.policy.identity import Identity
from fixeduser.state.handoff import MountGate
from fixeduser.state.ledger import ContainerLedger, ContainerRecord
from fixeduser.state.records import VolumeRecord, now_rfc3339
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.store import StateStore

_NOBODY = Identity(uid=65534, gid=65534, user="65534", group="65534")


@dataclass
class _Records:
    records: list[AuditRecord] = field(default_factory=list)

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)


@dataclass(frozen=True)
class Step:
    """One request and what the plugin would answer."""

    method: str
    uri: str
    body: dict[str, Any] | None
    action: str
    allow: bool
    message: str
    rule: str | None  # "file:line: text" of the line that allowed the API action


@dataclass
class Scenario:
    """What exists before the command runs."""

    volumes: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)
    container_owner: str | None = None
    driver_name: str = "fixeduser"
    settings: ServeSettings = field(default_factory=ServeSettings)  # the deployment: its folders are protected


def _request(user: str, call: ApiCall) -> AuthZRequest:
    payload: dict[str, Any] = {"User": user, "RequestMethod": call.method, "RequestUri": call.uri}
    if user:
        payload["UserAuthNMethod"] = "TLS"
    # As the docker CLI sends them: a Content-Length always (0 without a body), which tells the
    # plugin that no body was left unshown.
    payload["RequestHeaders"] = {"Content-Length": "0"}
    if call.body is not None:
        raw = json.dumps(call.body).encode()
        payload["RequestBody"] = base64.b64encode(raw).decode()
        payload["RequestHeaders"] = {"Content-Type": "application/json", "Content-Length": str(len(raw))}
    return AuthZRequest.from_wire(payload)


def _response(request: AuthZRequest, call: ApiCall) -> AuthZRequest:
    body: dict[str, Any] = {"Id": call.created_id, "Warnings": []}
    return dataclasses.replace(
        request, status=201, response_body_b64=base64.b64encode(json.dumps(body).encode()).decode()
    )


@dataclass
class _ScenarioDaemon:
    """The scenario's containers and fixeduser volumes, as a daemon would describe them; any other look-up cannot
    be answered."""

    containers: dict[str, str]  # name -> full ID
    driver: str
    volumes: set[str] = field(default_factory=set)  # fixeduser volumes
    mounts: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # full ID -> its volume mounts
    token: str = ""

    def created(self, container_id: str, body: dict[str, Any] | None, volumes: set[str]) -> None:
        """A container the command creates, mounting the fixeduser volumes its create body names."""
        self.containers[container_id] = container_id
        host = parse_container_create(json.dumps(body or {}).encode()).host_config
        named = {b.source for b in host.binds if b.kind == "volume"} | {m.source for m in host.mounts if m.source}
        self.mounts[container_id] = [
            {"Type": "volume", "Name": name, "Driver": self.driver} for name in sorted(named & volumes)
        ]

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        for name, container_id in self.containers.items():
            if reference.lstrip("/") == name or reference == container_id:
                mounts = self.mounts.get(container_id, [])
                return {"Id": container_id, "Name": f"/{name}", "HostConfig": {}, "Mounts": mounts}
        return None

    async def inspect_new_container(self, container_id: str) -> dict[str, Any] | None:
        return await self.inspect_container(container_id)

    async def inspect_volume(self, name: str) -> dict[str, Any] | None:
        if name in self.volumes:
            return {"Name": name, "Driver": self.driver, "Options": {}}
        raise DaemonError("`fixeduser explain` has no daemon to ask")

    async def inspect_network(self, reference: str) -> InspectedNetwork | None:
        raise DaemonError("`fixeduser explain` has no daemon to ask")

    async def inspect_task(self, reference: str) -> InspectedTask | None:
        raise DaemonError("`fixeduser explain` has no daemon to ask")


async def _explain(policy: CompiledPolicy, user: str, calls: list[ApiCall], scenario: Scenario) -> list[Step]:
    with tempfile.TemporaryDirectory(prefix="fixeduser-explain-") as tmp:
        store = StateStore(Path(tmp) / "state.db")
        try:
            ledger, registry = ContainerLedger(store), VolumeRegistry(store)
            subject = user or LOCAL_SUBJECT
            known = {name: f"{index:064x}" for index, name in enumerate(sorted(scenario.containers))}
            for name, container_id in known.items():
                owner = scenario.container_owner or subject
                await ledger.record(ContainerRecord(id=container_id, name=name, owner=owner))
            for name in sorted(scenario.volumes):
                await registry.add(
                    VolumeRecord(
                        name=name, creator="?", owner=_NOBODY, pinned=None, mode=0o770, purge=False,
                        created_at=now_rfc3339(), options={},
                    )
                )  # fmt: skip
            audit = _Records()
            daemon = _ScenarioDaemon(known, scenario.driver_name, volumes=set(scenario.volumes))
            authorizer = build_authorizer(
                scenario.settings.model_copy(update={"volume_name": scenario.driver_name}),
                policy=lambda: policy,
                ledger=ledger,
                registry=registry,
                gate=MountGate(),
                auditor=audit,
                daemon=daemon,
            )
            steps = []
            for call in calls:
                request = _request(user, call)
                verdict = await authorizer.authorize_request(request)
                record = audit.records[-1]
                steps.append(
                    Step(
                        method=call.method,
                        uri=call.uri,
                        body=call.body,
                        action=record.action,
                        allow=verdict.allow,
                        message=verdict.message,
                        rule=record.rule,
                    )
                )
                if not verdict.allow:
                    break  # the CLI stops at the first refusal
                if call.created_id is not None:
                    await authorizer.authorize_response(_response(request, call))
                    daemon.created(call.created_id, call.body, scenario.volumes)
                else:
                    await authorizer.authorize_response(dataclasses.replace(request, status=200))
            return steps
        finally:
            store.close()


def explain(policy: CompiledPolicy, user: str, calls: list[ApiCall], scenario: Scenario | None = None) -> list[Step]:
    """Decide each call as the plugin would for `user` ("" or "@local" for a unix-socket caller)."""
    user = "" if user == LOCAL_SUBJECT else user
    return asyncio.run(_explain(policy, user, calls, scenario or Scenario()))
