"""A request quoting megabytes (an 8 MiB URI, a 1 MiB user name) gets a bounded denial message and
a bounded audit record (the authorizer's own messages are clipped where they reach the wire)."""

from __future__ import annotations

from pathlib import Path

from fixeduser.authz.api import authz_handlers
from fixeduser.clipping import DENIAL_LIMIT, VALUE_LIMIT
from fixeduser.policy.escalations import Escalation

from .conftest import make_harness


async def test_huge_request_values_give_bounded_denials_and_audit_records(tmp_path: Path) -> None:
    harness, store = make_harness(tmp_path)
    handlers = authz_handlers(harness.authorizer)
    try:
        uri = "/v1.41/" + "u" * (8 << 20)
        answer = await handlers["AuthZPlugin.AuthZReq"]({"User": "alice", "RequestMethod": "GET", "RequestUri": uri})
        assert answer["Allow"] is False
        assert len(answer["Msg"]) <= DENIAL_LIMIT and "characters cut]" in answer["Msg"]
        assert answer["Msg"].startswith("alice: GET /v1.41/uuu")
        user = "@" + "n" * (1 << 20)
        answer = await handlers["AuthZPlugin.AuthZReq"]({"User": user, "RequestMethod": "GET", "RequestUri": "/_ping"})
        assert answer["Allow"] is False and len(answer["Msg"]) <= DENIAL_LIMIT
        first, second = harness.auditor.records
        assert len(first.path) <= 1024 and first.path.startswith("/v1.41/uuu") and len(first.reason) <= 4096
        assert len(second.user) <= 1024 and second.user.startswith("@nnn")
    finally:
        store.close()


def test_an_escalation_detail_is_clipped() -> None:
    """Escalation details quote the request (a bind source, a list of capabilities): bounded."""
    escalation = Escalation(kind="bind", detail="-v /" + "d" * (1 << 20))
    assert len(escalation.detail) <= VALUE_LIMIT and escalation.detail.startswith("-v /ddd")
    assert Escalation(kind="privileged", detail="--privileged").detail == "--privileged"
