"""AuthZReq/AuthZRes decisions as a pipeline: subject → classify → permission → the checks for the route's
concern (containers, volumes, swarm; each gathering its facts from `Facts`) → audit. AuthZRes goes to `Responses`.

Every path that is not an explicit allow is a deny; every exception is a deny.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from fixeduser.authz.audit import Auditor, AuditRecord, now
from fixeduser.authz.container_checks import ContainerChecks
from fixeduser.authz.decision import (
    ALL_CONTAINER_ACTIONS,
    API_OBJECT,
    EXEC_ACTIONS,
    NETWORK_ATTACH_ACTIONS,
    OWNED_ACTIONS,
    Context,
    Denied,
    Verdict,
    citation,
    require_escalations,
    require_others,
)
from fixeduser.authz.facts import Facts
from fixeduser.authz.responses import Responses
from fixeduser.authz.swarm_checks import SwarmChecks
from fixeduser.authz.volume_checks import VolumeChecks
from fixeduser.authz.wire import AuthZRequest
from fixeduser.docker_api import (
    BODY_READ_ACTIONS,
    MIN_API_VERSION,
    ApiRequest,
    body_presence,
    classify,
    hidden_body_reason,
    is_too_old,
    path_api_version,
    request_path,
)
from fixeduser.docker_api.daemon import SELF_ACTIONS, SELF_HEADER, DaemonLookups
from fixeduser.policy.compiled import LOCAL_SUBJECT, ROLE_PREFIX, CompiledPolicy
from fixeduser.policy.escalations import Escalation
from fixeduser.state.handoff import MountGate
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.restarts import RestartCandidates

log = logging.getLogger(__name__)

# Daemon-level requests that could switch fixeduser off or let something else start containers here,
# each an escalation on top of its `api` permission (so `api, *` alone never grants them).
CONTROL_ESCALATIONS = {
    **{
        f"plugin.{verb}": "plugin-management"
        for verb in ("enable", "disable", "remove", "upgrade", "set", "create", "push", "pull")
    },
    **{f"swarm.{verb}": "swarm-membership" for verb in ("init", "join", "leave", "update", "unlock", "unlockkey")},
    "node.update": "swarm-membership",
    "node.remove": "swarm-membership",
    "grpc.start": "buildkit",  # an opaque gRPC stream: BuildKit's control API
}
# Look-ups fixeduser itself makes through the daemon (authenticated by a per-process header).
OWN_LOOKUPS = SELF_ACTIONS | {"volume.inspect"}


class Authorizer:
    def __init__(
        self,
        *,
        policy: Callable[[], CompiledPolicy],
        ledger: ContainerLedger,
        registry: VolumeRegistry,
        gate: MountGate,
        auditor: Auditor,
        driver_name: str,
        protected_paths: Iterable[Path],
        daemon: DaemonLookups | None,
        local_subject: str = LOCAL_SUBJECT,
        allow_unknown_routes: bool = False,
        is_recovering: Callable[[str], bool] = lambda _: False,
        on_container_removal: Callable[[], None] = lambda: None,
        restarts: RestartCandidates | None = None,
    ) -> None:
        self._policy = policy
        self._ledger = ledger
        self._auditor = auditor
        self._daemon = daemon
        self._local_subject = local_subject
        self._allow_unknown = allow_unknown_routes
        self._is_recovering = is_recovering
        protected = tuple(protected_paths)
        facts = Facts(daemon=daemon, ledger=ledger, registry=registry, driver_name=driver_name)
        self._volumes = VolumeChecks(facts=facts, registry=registry, gate=gate)
        self._restarts = restarts
        self._containers = ContainerChecks(
            facts=facts, volumes=self._volumes, ledger=ledger, protected=protected, restarts=restarts
        )
        self._swarm = SwarmChecks(facts=facts, ledger=ledger, volumes=self._volumes, protected=protected)
        self._responses = Responses(
            facts=facts, ledger=ledger, gate=gate, on_container_removal=on_container_removal, restarts=restarts
        )

    # ---- entry points -------------------------------------------------------------------------

    async def authorize_request(self, request: AuthZRequest) -> Verdict:
        return await self._decide("request", request, self._on_request)

    async def authorize_response(self, request: AuthZRequest) -> Verdict:
        return await self._decide("response", request, self._on_response)

    async def _decide(
        self, phase: str, request: AuthZRequest, handler: Callable[[Context], Awaitable[Verdict]]
    ) -> Verdict:
        policy = self._policy()
        api: ApiRequest | None = None
        try:
            subject = self._subject(request)
            api = classify(request.method, request.uri)
            if api is None:
                if not self._allow_unknown:
                    raise Denied(
                        f"{subject}: {request.method} {request.uri.split('?')[0]} is not a known "
                        "Docker API route (denied by default)"
                    )
                deny_old_api(subject, path_api_version(request_path(request.uri) or ""))
                verdict = Verdict(allow=True, message="unknown route allowed by configuration")
            else:
                subject = self._recovered_owner(request, api) or subject
                verdict = await handler(Context(request=request, subject=subject, api=api, policy=policy))
        except Denied as exc:
            verdict = Verdict(allow=False, message=str(exc), rule=exc.rule)
        except Exception as exc:  # deny on every error, but say so
            log.exception("decision failed", extra={"uri": request.uri})
            verdict = Verdict(allow=False, message=f"fixeduser could not decide this request ({exc}); denied")
        self._audit(phase, request, api, policy, verdict)
        return verdict

    def _recovered_owner(self, request: AuthZRequest, api: ApiRequest) -> str | None:
        """A start fixeduser itself makes of a container the daemon could not restart is decided, and
        claimed, as a start by the container's owner."""
        if (
            api.action == "container.start"
            and not request.user
            and self._daemon is not None
            and request.header(SELF_HEADER) == self._daemon.token
            and self._is_recovering(api.target or "")
        ):
            record = self._ledger.get(api.target or "")
            return record.owner if record else None
        return None

    def _subject(self, request: AuthZRequest) -> str:
        if not request.user:
            return self._local_subject
        if request.user.startswith(("@", ROLE_PREFIX)):
            raise Denied(f"user name {request.user!r} is reserved for policy subjects and cannot log in")
        return request.user

    def _audit(
        self,
        phase: str,
        request: AuthZRequest,
        api: ApiRequest | None,
        policy: CompiledPolicy,
        verdict: Verdict,
    ) -> None:
        self._auditor.record(
            AuditRecord(
                time=now(),
                phase=phase,
                user=request.user or self._local_subject,
                auth=request.auth_method or "none",
                method=request.method,
                path=api.path if api else request.uri.split("?")[0],
                action=api.action if api else "unknown",
                target=api.target if api else None,
                allow=verdict.allow,
                reason=verdict.message,
                rule=citation(verdict.rule) if verdict.rule else None,
                policy=policy.version,
            )
        )

    # ---- response phase -----------------------------------------------------------------------

    async def _on_response(self, ctx: Context) -> Verdict:
        if ctx.api.action == "container.inspect" and not self._is_self_query(ctx):
            await self._containers.check_inspect_answer(ctx)
        return await self._responses.on_response(ctx)

    # ---- request phase ------------------------------------------------------------------------

    async def _on_request(self, ctx: Context) -> Verdict:
        # Before everything else, ping included: the CLI negotiates with an unversioned /_ping.
        deny_old_api(ctx.subject, ctx.api.api_version)
        if self._is_self_query(ctx):
            return Verdict(allow=True, message="fixeduser's own read-only look-up")
        if is_form_body(ctx.request):
            raise Denied(
                f"{ctx.subject}: form-encoded request bodies are not shown to authorization plugins "
                "but can override query parameters, so they are denied"
            )
        if ctx.api.action == "system.ping":
            # Reveals nothing, and without it the docker CLI cannot negotiate the API version,
            # so every later denial would read as a version error instead of our message.
            return Verdict(allow=True, message="ping is always allowed")
        decision = ctx.policy.decide(ctx.subject, API_OBJECT, ctx.api.action)
        if not decision.allowed:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}: no policy line grants "
                f"`p, <{ctx.subject} or one of its roles>, api, {ctx.api.action}`"
            )
        if ctx.api.action in BODY_READ_ACTIONS:
            deny_hidden_body(ctx)
        await self._check_action(ctx)
        if ctx.api.action == "container.update" and self._restarts is not None:
            await self._restarts.update_allowed(ctx.key)  # last: only an update that is allowed is waited for
        return Verdict(allow=True, message="allowed", rule=decision.rule)

    async def _check_action(self, ctx: Context) -> None:
        """What the action itself needs beyond its `api` permission: escalations, ownership, permits."""
        action = ctx.api.action
        if action in CONTROL_ESCALATIONS:
            escalation = Escalation(kind=CONTROL_ESCALATIONS[action], detail="its daemon-wide effect")
            require_escalations(ctx, [escalation], f"{action} {ctx.api.target or ''}".strip())
        if action == "container.start":
            self._containers.check_start_request(ctx)
        if action == "container.create":
            await self._containers.check_create(ctx)
        elif action == "volume.create":
            self._volumes.check_create(ctx)
        elif action == "volume.remove":
            self._volumes.check_remove(ctx)
        elif action == "volume.prune":
            self._volumes.check_prune(ctx)
        elif action in OWNED_ACTIONS:
            await self._containers.check_action(ctx)
        elif action in EXEC_ACTIONS:
            self._containers.check_exec(ctx)
        elif action in ALL_CONTAINER_ACTIONS:
            require_others(ctx, "every user's stopped containers")
        elif action in NETWORK_ATTACH_ACTIONS:
            await self._containers.check_network_attach(ctx)
        elif action == "image.build":
            await self._containers.check_build(ctx)
        await self._swarm.check(ctx)

    def _is_self_query(self, ctx: Context) -> bool:
        return (
            self._daemon is not None
            and not ctx.request.user
            and ctx.api.action in OWN_LOOKUPS
            and ctx.request.header(SELF_HEADER) == self._daemon.token
        )


def deny_old_api(subject: str, version: str | None) -> None:
    if is_too_old(version):
        raise Denied(
            f"{subject}: API version {version} is older than {MIN_API_VERSION}, the oldest fixeduser allows "
            f"(daemons before 26.1 still apply settings that version {version} sends where fixeduser does not "
            f"check them); use API {MIN_API_VERSION} or newer"
        )


def deny_hidden_body(ctx: Context) -> None:
    content_length = ctx.request.header("Content-Length")
    if body_presence(bool(ctx.request.body_b64), content_length) == "hidden":
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}: the request body is missing from what the daemon sent "
            f"fixeduser ({hidden_body_reason(content_length)}), and fixeduser denies what it cannot check"
        )


def is_form_body(request: AuthZRequest) -> bool:
    content_type = (request.header("Content-Type") or "").lower()
    return content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
