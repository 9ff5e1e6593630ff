"""Run API requests through a real `Authorizer` built from a policy, without any daemon.

State (containers, volumes) lives in a throw-away database; what the command refers to is
assumed to exist: named volumes as fixeduser volumes, containers as owned by `container_owner`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixeduser.admin.dockercli import ApiCall
from fixeduser.authz.audit import AuditRecord
from fixeduser.authz.authorizer import Authorizer
from fixeduser.authz.ledger import ContainerLedger, ContainerRecord
from fixeduser.authz.wire import AuthZRequest
from fixeduser.handoff import MountGate
from fixeduser.identity import Identity
from fixeduser.policy.compiled import LOCAL_SUBJECT, CompiledPolicy
from fixeduser.settings import ServeSettings
from fixeduser.state import StateStore
from fixeduser.volumes.registry import VolumeRecord, VolumeRegistry, now_rfc3339

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
    return AuthZRequest.model_validate(payload)


def _response(request: AuthZRequest, call: ApiCall) -> AuthZRequest:
    body: dict[str, Any] = {"Id": call.created_id, "Warnings": []}
    return request.model_copy(
        update={"status": 201, "response_body_b64": base64.b64encode(json.dumps(body).encode()).decode()}
    )


async def _explain(policy: CompiledPolicy, user: str, calls: list[ApiCall], scenario: Scenario) -> list[Step]:
    with tempfile.TemporaryDirectory(prefix="fixeduser-explain-") as tmp:
        store = StateStore(Path(tmp) / "state.db")
        try:
            ledger, registry = ContainerLedger(store), VolumeRegistry(store)
            subject = user or LOCAL_SUBJECT
            for index, name in enumerate(sorted(scenario.containers)):
                owner = scenario.container_owner or subject
                await ledger.record(
                    ContainerRecord(id=f"{index:064x}", name=name, owner=owner, volumes=(), restart=False)
                )
            for name in sorted(scenario.volumes):
                await registry.add(
                    VolumeRecord(
                        name=name, creator="?", owner=_NOBODY, pinned=None, mode=0o770, purge=False,
                        created_at=now_rfc3339(), options={},
                    )
                )  # fmt: skip
            audit = _Records()
            defaults = ServeSettings()
            authorizer = Authorizer(
                policy=lambda: policy,
                ledger=ledger,
                registry=registry,
                gate=MountGate(),
                auditor=audit,
                driver_name=scenario.driver_name,
                protected_paths=[defaults.state_dir, defaults.local_root, defaults.effective_mount_root],
                daemon=None,
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
                else:
                    await authorizer.authorize_response(request.model_copy(update={"status": 200}))
            return steps
        finally:
            store.close()


def explain(policy: CompiledPolicy, user: str, calls: list[ApiCall], scenario: Scenario | None = None) -> list[Step]:
    """Decide each call as the plugin would for `user` ("" or "@local" for a unix-socket caller)."""
    user = "" if user == LOCAL_SUBJECT else user
    return asyncio.run(_explain(policy, user, calls, scenario or Scenario()))
