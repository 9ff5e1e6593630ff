"""What every check shares: the request in context, the verdict, and the few ways a check denies.

Every path that is not an explicit allow is a deny; a check says why in one sentence (`Denied`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fixeduser.authz.wire import AuthZRequest, AuthZResponse
from fixeduser.docker_api import ApiRequest, BodyError, actions_owned_by
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.escalations import Escalation
from fixeduser.policy.files import PolicyLine
from fixeduser.state.ledger import OwnedRecord

T = TypeVar("T")

API_OBJECT = "api"
OTHERS_OBJECT = "others"
# Requests that make the daemon mount the target container's volumes.
MOUNTING_ACTIONS = frozenset(
    {"container.start", "container.restart", "container.archive.get", "container.archive.head", "container.archive.put"}
)
# Whose object each request acts on is the route table's to say (fixeduser.docker_api.routes).
OWNED_ACTIONS = actions_owned_by("container")
EXEC_ACTIONS = actions_owned_by("exec")
SERVICE_OWNED_ACTIONS = actions_owned_by("service")
TASK_OWNED_ACTIONS = actions_owned_by("task")
NETWORK_ATTACH_ACTIONS = actions_owned_by("container in body")
ALL_CONTAINER_ACTIONS = actions_owned_by("everyone's containers")
assert MOUNTING_ACTIONS <= OWNED_ACTIONS


class Denied(Exception):
    """A denial; the message is the one sentence the docker user sees."""

    def __init__(self, message: str, rule: PolicyLine | None = None) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(slots=True)  # one per decision: a frozen dataclass costs more to build (bench/NOTES.md)
class Verdict:
    allow: bool
    message: str
    rule: PolicyLine | None = None

    def wire(self) -> AuthZResponse:
        return AuthZResponse(allow=self.allow, msg=self.message if not self.allow else "")


@dataclass(slots=True)
class Context:
    """One request as it flows through the decision: who, what, and the policy used throughout."""

    request: AuthZRequest
    subject: str
    api: ApiRequest
    policy: CompiledPolicy

    @property
    def key(self) -> str:
        return f"{self.subject}\0{self.request.method}\0{self.request.uri}"


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """The container the daemon resolves a reference to: its full ID, its owner (None: fixeduser did
    not see it created), and the daemon's description of it when it was asked."""

    id: str
    name: str
    owner: str | None
    inspected: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.name or self.id[:12]


def parsed(ctx: Context, parse: Callable[[], T], what: str) -> T:
    """`parse()`, or a denial saying the body could not be read."""
    try:
        return parse()
    except (BodyError, ValueError) as exc:
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}: fixeduser cannot read the {what} body ({exc}) "
            "and denies what it cannot check"
        ) from None


def require_escalations(ctx: Context, found: list[Escalation], what: str) -> None:
    for escalation in found:
        if not ctx.policy.decide(ctx.subject, escalation.obj, escalation.action).allowed:
            raise Denied(
                f"{ctx.subject} may not {what} with {escalation.detail}: escalation `{escalation.kind}` "
                f"needs `p, <{ctx.subject} or one of its roles>, {escalation.obj}, {escalation.action}`"
            )


def require_others(ctx: Context, whose: str) -> None:
    if not ctx.policy.decide(ctx.subject, OTHERS_OBJECT, ctx.api.action).allowed:
        target = f" {ctx.api.target}" if ctx.api.target else ""
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}{target}: it acts on {whose}; needs "
            f"`p, <{ctx.subject} or one of its roles>, {OTHERS_OBJECT}, {ctx.api.action}`"
        )


def check_owned(ctx: Context, record: OwnedRecord | ContainerFacts | None, kind: str, reference: str = "") -> None:
    """Only the owner may, or a subject granted `others`; `reference`: how the request named it."""
    owner = record.owner if record else None
    if owner != ctx.subject:
        named = f" {reference}" if reference else ""
        whose = f"{owner}'s {kind}{named}" if owner else f"a {kind} fixeduser has no owner for{named}"
        require_others(ctx, whose)


@functools.lru_cache(maxsize=4096)  # the same few lines decide most requests: format each once
def citation(rule: PolicyLine) -> str:
    return f"{rule.where}: {rule.text}"
