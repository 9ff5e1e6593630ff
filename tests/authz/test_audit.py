"""Audit: one JSON line per decision with who, how, what, result and rule, and never a secret."""

from __future__ import annotations

import base64
from dataclasses import asdict
from pathlib import Path

from fixeduser.authz.audit import AUDIT_LINE, JsonLineAuditor
from fixeduser.authz.wire import AuthZRequest

from .conftest import Harness

SECRETS = ("hunter2", "c2VjcmV0LXJlZ2lzdHJ5LXRva2Vu", "s3cr3t-label")


async def test_every_decision_is_one_record_with_the_required_fields(harness: Harness) -> None:
    """Allowed and denied requests each give one record naming user, auth, action, target, result, rule."""
    await harness.ask("GET", "/v1.41/containers/json")
    await harness.ask("POST", "/containers/create", body={"Image": "x", "HostConfig": {"Privileged": True}})
    await harness.ask("GET", "/v1.41/containers/abc/json", user="")
    first, second, third = harness.auditor.records
    assert (first.user, first.auth, first.action, first.allow) == ("alice", "TLS", "container.list", True)
    assert first.rule is not None and "api, container.*" in first.rule
    assert second.allow is False and second.reason.startswith("alice may not create a container with --privileged")
    assert (third.user, third.auth, third.target) == ("@local", "none", "abc")
    for record in harness.auditor.records:
        assert {"time", "user", "auth", "action", "target", "allow", "reason", "rule"} <= set(asdict(record))


async def test_audit_never_contains_bodies_headers_or_env(harness: Harness, tmp_path: Path) -> None:
    """Registry auth headers, env values, labels and bodies never reach the audit file, allowed or denied."""
    body = {"Image": "x", "Env": ["TOKEN=hunter2"], "Labels": {"k": "s3cr3t-label"}, "HostConfig": {}}
    for privileged in (False, True):
        body["HostConfig"] = {"Privileged": privileged}
        request = harness.request("POST", "/containers/create?name=c", body=body)
        assert request.headers is not None
        request.headers["X-Registry-Auth"] = "c2VjcmV0LXJlZ2lzdHJ5LXRva2Vu"
        await harness.authorizer.authorize_request(request)
    pull = AuthZRequest.from_wire(
        {"User": "alice", "RequestMethod": "POST", "RequestUri": "/images/create?fromImage=x",
         "RequestHeaders": {"X-Registry-Auth": "c2VjcmV0LXJlZ2lzdHJ5LXRva2Vu"}}
    )  # fmt: skip
    await harness.authorizer.authorize_request(pull)
    garbage = base64.b64encode(b'{"Env": ["TOKEN=hunter2"], "HostConfig": {"Binds": 7}}').decode()
    await harness.authorizer.authorize_request(
        AuthZRequest.from_wire(
            {"User": "alice", "RequestMethod": "POST", "RequestUri": "/containers/create", "RequestBody": garbage,
             "RequestHeaders": {"Content-Type": "application/json"}}
        )
    )  # fmt: skip
    auditor = JsonLineAuditor(tmp_path / "audit.jsonl")
    for record in harness.auditor.records:
        auditor.record(record)
    await auditor.close()
    text = (tmp_path / "audit.jsonl").read_text()
    lines = [AUDIT_LINE.validate_json(line) for line in text.splitlines()]  # each line is a whole record
    assert len(lines) == 4 and auditor.counts == {"allow": 1, "deny": 3}
    for secret in SECRETS:
        assert secret not in text
    assert all(line.path in ("/containers/create", "/images/create") for line in lines)  # no query strings
