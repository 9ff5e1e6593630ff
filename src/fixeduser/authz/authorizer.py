"""AuthZReq/AuthZRes decisions: parse → classify → decide → (claim/permit) → audit.

Every path that is not an explicit allow is a deny; every exception is a deny.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fixeduser.authz.audit import Auditor, AuditRecord, now
from fixeduser.authz.networks import network_mode_reference, parse_network_attach
from fixeduser.authz.wire import AuthZRequest, AuthZResponse
from fixeduser.docker_api import (
    BODY_READ_ACTIONS,
    MIN_API_VERSION,
    ApiRequest,
    BodyError,
    ContainerCreate,
    MountSpec,
    actions_owned_by,
    body_presence,
    check_start_body,
    classify,
    hidden_body_reason,
    is_too_old,
    parse_container_create,
    parse_create_response,
    parse_exec_create,
    parse_exec_create_response,
    parse_service_create_response,
    parse_service_spec,
    parse_volume_create,
    path_api_version,
    request_path,
)
from fixeduser.docker_api.daemon import HOST_NETWORK, SELF_ACTIONS, SELF_HEADER, DaemonError, DaemonLookups, is_full_id
from fixeduser.policy.access import (
    AccessDenied,
    mount_identity,
    require_may_assume,
    require_volume_permission,
)
from fixeduser.policy.compiled import LOCAL_SUBJECT, ROLE_PREFIX, CompiledPolicy
from fixeduser.policy.escalations import (
    NAMESPACE_MODES,
    Escalation,
    bind_sources,
    build_escalations,
    container_escalations,
    endpoint_sysctl_escalations,
    exec_escalations,
    local_volume_escalation,
    service_escalations,
    start_bind_escalations,
    start_escalations,
    volume_create_escalations,
)
from fixeduser.policy.files import PolicyLine
from fixeduser.policy.identity import Identity
from fixeduser.state.handoff import GateBusy, MountGate
from fixeduser.state.ledger import ContainerLedger, ContainerRecord, OwnedRecord
from fixeduser.state.options import OptionError, parse_options
from fixeduser.state.registry import VolumeRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")

API_OBJECT = "api"
OTHERS_OBJECT = "others"
# Requests that make the daemon mount the target container's volumes.
MOUNTING_ACTIONS = frozenset(
    {
        "container.start",
        "container.restart",
        "container.archive.get",
        "container.archive.head",
        "container.archive.put",
    }
)
# Whose object each request acts on is the route table's to say (fixeduser.docker_api.routes).
OWNED_ACTIONS = actions_owned_by("container")
EXEC_ACTIONS = actions_owned_by("exec")
SERVICE_OWNED_ACTIONS = actions_owned_by("service")
TASK_OWNED_ACTIONS = actions_owned_by("task")
NETWORK_ATTACH_ACTIONS = actions_owned_by("container in body")
ALL_CONTAINER_ACTIONS = actions_owned_by("everyone's containers")
assert MOUNTING_ACTIONS <= OWNED_ACTIONS
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
    ) -> None:
        self._policy = policy
        self._ledger = ledger
        self._registry = registry
        self._gate = gate
        self._auditor = auditor
        self._driver_name = driver_name
        self._protected = tuple(protected_paths)
        self._daemon = daemon
        self._local_subject = local_subject
        self._allow_unknown = allow_unknown_routes
        self._is_recovering = is_recovering
        self._on_removal = on_container_removal

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
                _deny_old_api(subject, path_api_version(request_path(request.uri) or ""))
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
                rule=_citation(verdict.rule) if verdict.rule else None,
                policy=policy.version,
            )
        )

    # ---- request phase ------------------------------------------------------------------------

    async def _on_request(self, ctx: Context) -> Verdict:
        # Before everything else, ping included: the CLI negotiates with an unversioned /_ping.
        _deny_old_api(ctx.subject, ctx.api.api_version)
        if self._is_self_query(ctx):
            return Verdict(allow=True, message="fixeduser's own read-only look-up")
        if _is_form_body(ctx.request):
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
            _deny_hidden_body(ctx)
        await self._check_action(ctx)
        return Verdict(allow=True, message="allowed", rule=decision.rule)

    async def _check_action(self, ctx: Context) -> None:
        """What the action itself needs beyond its `api` permission: escalations, ownership, permits."""
        action = ctx.api.action
        if action in CONTROL_ESCALATIONS:
            escalation = Escalation(kind=CONTROL_ESCALATIONS[action], detail="its daemon-wide effect")
            self._require_escalations(ctx, [escalation], f"{action} {ctx.api.target or ''}".strip())
        if action == "container.start":
            self._check_start_request(ctx)
        if action == "container.create":
            await self._check_container_create(ctx)
        elif action == "volume.create":
            self._check_volume_create(ctx)
        elif action == "volume.remove":
            self._check_volume_remove(ctx)
        elif action == "volume.prune":
            self._check_volume_prune(ctx)
        elif action in OWNED_ACTIONS:
            await self._check_container_action(ctx)
        elif action in EXEC_ACTIONS:
            self._check_owned(ctx, self._ledger.execs.find(ctx.api.target or ""), "exec instance")
        elif action in ALL_CONTAINER_ACTIONS:
            self._require_others(ctx, "every user's stopped containers")
        elif action in NETWORK_ATTACH_ACTIONS:
            await self._check_network_attach(ctx)
        elif action == "image.build":
            await self._check_build(ctx)
        await self._check_swarm_action(ctx)

    def _check_start_request(self, ctx: Context) -> None:
        """A start carries no body, and restoring a checkpoint is an escalation."""
        if ctx.request.body_b64:
            _parsed(ctx, lambda: check_start_body(ctx.request.body), "container start")
        found = start_escalations(ctx.api.query)
        if found:
            self._require_escalations(ctx, found, f"start container {ctx.api.target}")

    async def _check_build(self, ctx: Context) -> None:
        """A build's query sets up its RUN containers: checked like a container create's HostConfig."""
        found = build_escalations(ctx.api.query)
        network = network_mode_reference((ctx.api.query.get("networkmode") or [""])[0])
        if network is not None and await self._is_host_network(ctx, network, missing_ok=True):
            found.append(Escalation(kind="namespaces", detail=f"docker build --network {network} (the host network)"))
        self._require_escalations(ctx, found, "build an image")

    async def _check_swarm_action(self, ctx: Context) -> None:
        """Services and their tasks: their creator's, and their specs checked like container creates."""
        action = ctx.api.action
        if action in SERVICE_OWNED_ACTIONS:
            self._check_owned(ctx, self._ledger.services.find(ctx.api.target or ""), "service")
        if action in ("service.create", "service.update"):
            await self._check_service_spec(ctx)
        elif action in TASK_OWNED_ACTIONS:
            await self._check_task_action(ctx)

    def _is_self_query(self, ctx: Context) -> bool:
        return (
            self._daemon is not None
            and not ctx.request.user
            and ctx.api.action in OWN_LOOKUPS
            and ctx.request.header(SELF_HEADER) == self._daemon.token
        )

    def _require_escalations(self, ctx: Context, found: list[Escalation], what: str) -> None:
        for escalation in found:
            if not ctx.policy.decide(ctx.subject, escalation.obj, escalation.action).allowed:
                raise Denied(
                    f"{ctx.subject} may not {what} with {escalation.detail}: escalation `{escalation.kind}` "
                    f"needs `p, <{ctx.subject} or one of its roles>, {escalation.obj}, {escalation.action}`"
                )

    async def _check_container_create(self, ctx: Context) -> None:
        _deny_id_like_name(ctx, ctx.api.query.get("name", [""])[0])
        create = _parsed(ctx, lambda: _parse_create(ctx.request.body), "container create")
        _deny_unknown_mounts(ctx, create.host_config.mounts)
        referenced = {ref: await self._resolve_container(ctx, ref) for ref in sorted(_referenced_containers(create))}
        found = container_escalations(
            create,
            protected=self._protected,
            is_foreign_container=lambda ref: (facts := referenced.get(ref)) is None or facts.owner != ctx.subject,
        )
        found += await self._disguised_binds(ctx, create)
        network = network_mode_reference(create.host_config.network_mode)
        if network is not None and await self._is_host_network(ctx, network, missing_ok=True):
            found.append(Escalation(kind="namespaces", detail=f"--network={network} (the host network)"))
        self._require_escalations(ctx, found, "create a container")
        volumes = self._container_volumes(ctx, create, referenced)
        await self._claim(
            ctx, container=ctx.api.query.get("name", [""])[0], owner=ctx.subject, volumes=volumes, for_create=True
        )

    def _container_volumes(
        self, ctx: Context, create: ContainerCreate, referenced: dict[str, ContainerFacts | None]
    ) -> dict[str, Identity]:
        """Fixeduser volumes this container will mount, each with the identity it mounts as."""
        host = create.host_config
        ours_by_default = self._is_our_driver(host.volume_driver)
        named: dict[str, dict[str, str] | None] = {}  # name -> create options if our driver may create it
        anonymous = bool(set(create.volumes) - {b.target for b in host.binds} - {m.target for m in host.mounts})
        anonymous_ours = False
        for bind in host.binds:
            if bind.kind == "anonymous":
                anonymous = True
            elif bind.kind == "volume":
                named[bind.source] = {} if ours_by_default else None
        for mount in host.mounts:
            if mount.type != "volume":
                continue
            # The daemon picks a --mount's driver from its own DriverConfig only, never VolumeDriver.
            driver_is_ours = self._is_our_driver(mount.volume_driver)
            if not mount.source:
                anonymous_ours = anonymous_ours or driver_is_ours
            else:
                named[mount.source] = dict(mount.volume_driver_opts) if driver_is_ours else None
        if (anonymous and ours_by_default) or anonymous_ours:
            raise Denied(
                f"{ctx.subject} may not create anonymous fixeduser volumes: give each volume a name (-v NAME:/path)"
            )
        for source in host.volumes_from:
            for volume in self._our_volumes(ctx, referenced.get(source.split(":", 1)[0])):
                named.setdefault(volume, None)
        return self._identities_for(ctx, ctx.subject, named)

    def _our_volumes(self, ctx: Context, container: ContainerFacts | None) -> list[str]:
        """The fixeduser volumes the daemon says a container mounts."""
        if container is None or container.inspected is None:
            return []
        mounts = container.inspected.get("Mounts")
        if not isinstance(mounts, list) or not all(isinstance(m, dict) for m in mounts):
            raise Denied(f"{ctx.subject}: the daemon described container {container.label} in a way fixeduser "
                         "cannot check")  # fmt: skip
        return sorted(
            str(m.get("Name", ""))
            for m in mounts
            if m.get("Type") == "volume" and self._is_our_driver(str(m.get("Driver", "")))
        )

    async def _disguised_binds(self, ctx: Context, create: ContainerCreate) -> list[Escalation]:
        """Existing `local` volumes with driver options (bind mounts in disguise) this container would use."""
        host = create.host_config
        names = {b.source for b in host.binds if b.kind == "volume"}
        # A --mount with its own driver options creates the volume only if it is new; if it exists the
        # daemon uses it as it is, so every named --mount volume is checked.
        names |= {m.source for m in host.mounts if m.type == "volume" and m.source}
        found = []
        for name in sorted(names - set(self._registry.names())):
            inspected = await self._inspect_volume(ctx, name)
            if inspected is None:
                continue
            options = inspected.get("Options")
            driver = inspected.get("Driver")
            if not isinstance(driver, str) or (options is not None and not isinstance(options, dict)):
                raise Denied(f"{ctx.subject}: the daemon described volume {name} in a way fixeduser cannot check")
            escalation = local_volume_escalation(name, driver, {str(k): str(v) for k, v in (options or {}).items()})
            if escalation is not None:
                found.append(escalation)
        return found

    async def _inspect_volume(self, ctx: Context, name: str) -> dict[str, object] | None:
        if self._daemon is None:
            raise Denied(
                f"{ctx.subject} may not use volume {name}: fixeduser has no daemon connection to check "
                "that it is not a bind mount in disguise"
            )
        try:
            return await self._daemon.inspect_volume(name)
        except DaemonError as exc:
            raise Denied(f"{ctx.subject} may not use volume {name}: cannot check what it is ({exc})") from None

    def _identities_for(self, ctx: Context, owner: str, named: dict[str, dict[str, str] | None]) -> dict[str, Identity]:
        identities: dict[str, Identity] = {}
        for name, create_options in sorted(named.items()):
            record = self._registry.get(name)
            pinned = record.pinned if record else None
            if record is None:
                if create_options is None:
                    continue  # not ours: another driver's volume
                pinned = self._permit_create(ctx, name, create_options)
            try:
                identities[name] = mount_identity(ctx.policy, owner, name, pinned)
            except AccessDenied as exc:
                raise Denied(str(exc)) from None
        return identities

    def _permit_create(self, ctx: Context, name: str, options: dict[str, str]) -> Identity | None:
        """Check a fixeduser volume create and let the driver do exactly it; returns the pin."""
        try:
            require_volume_permission(ctx.policy, ctx.subject, name, "create")
            parsed = parse_options(options)
            if parsed.pinned is not None:
                require_may_assume(ctx.policy, ctx.subject, parsed.pinned)
        except AccessDenied as exc:
            raise Denied(str(exc)) from None
        except OptionError as exc:
            raise Denied(f"{ctx.subject} cannot create fixeduser volume {name}: {exc}") from None
        self._gate.grant(ctx.key, kind="create", volume=name, subject=ctx.subject, options=options)
        return parsed.pinned

    def _check_volume_create(self, ctx: Context) -> None:
        create = _parsed(ctx, lambda: parse_volume_create(ctx.request.body), "volume create")
        self._require_escalations(ctx, volume_create_escalations(create.driver, create.driver_opts), "create a volume")
        if not self._is_our_driver(create.driver):
            return
        if not create.name:
            raise Denied(f"{ctx.subject} must give fixeduser volumes a name (docker volume create -d ... NAME)")
        if create.name in self._registry:
            return  # the daemon answers with the existing volume; nothing is created
        self._permit_create(ctx, create.name, create.driver_opts)

    def _check_volume_remove(self, ctx: Context) -> None:
        name = ctx.api.target or ""
        if name not in self._registry:
            return
        try:
            require_volume_permission(ctx.policy, ctx.subject, name, "remove")
        except AccessDenied as exc:
            raise Denied(str(exc)) from None
        self._gate.grant(ctx.key, kind="remove", volume=name, subject=ctx.subject, options={})

    def _check_volume_prune(self, ctx: Context) -> None:
        if not self._registry.names():
            return
        if not ctx.policy.decide(ctx.subject, "volume:*", "remove").allowed:
            raise Denied(
                f"{ctx.subject} may not prune volumes: pruning can remove any fixeduser volume and needs "
                f"`p, <{ctx.subject} or one of its roles>, volume:*, remove`"
            )
        self._gate.grant(ctx.key, kind="remove", volume="*", subject=ctx.subject, options={})

    def _require_others(self, ctx: Context, whose: str) -> None:
        if not ctx.policy.decide(ctx.subject, OTHERS_OBJECT, ctx.api.action).allowed:
            target = f" {ctx.api.target}" if ctx.api.target else ""
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}{target}: it acts on {whose}; needs "
                f"`p, <{ctx.subject} or one of its roles>, {OTHERS_OBJECT}, {ctx.api.action}`"
            )

    def _check_owned(
        self, ctx: Context, record: OwnedRecord | ContainerFacts | None, kind: str, reference: str = ""
    ) -> None:
        """Only the owner may, or a subject granted `others`; `reference`: how the request named it."""
        owner = record.owner if record else None
        if owner != ctx.subject:
            named = f" {reference}" if reference else ""
            whose = f"{owner}'s {kind}{named}" if owner else f"a {kind} fixeduser has no owner for{named}"
            self._require_others(ctx, whose)

    async def _check_service_spec(self, ctx: Context) -> None:
        spec = _parsed(ctx, lambda: parse_service_spec(ctx.request.body), "service spec")
        _deny_unknown_mounts(ctx, spec.container.mounts if spec.container else [])
        found = service_escalations(spec, protected=self._protected, is_fixeduser_volume=self._is_ours)
        # The daemon resolves each target by ID, name or ID prefix, locally too (a predefined network's
        # local ID means its swarm namesake): ask it what each one is, like `GET /networks/{id}` would.
        for target in sorted(set(spec.networks) - {HOST_NETWORK}):
            if await self._is_host_network(ctx, target, missing_ok=False):
                found.append(Escalation(kind="namespaces", detail=f"network {target} (the host network)"))
        self._require_escalations(ctx, found, "run a service")

    async def _is_host_network(self, ctx: Context, reference: str, *, missing_ok: bool) -> bool:
        """Whether the daemon resolves `reference` to the host network; Denied when it cannot say.

        `missing_ok`: a container may name a network that does not exist yet (its start fails until
        it does); a new network can never be the host network, whose name and ID are taken.
        """
        if self._daemon is None:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}: fixeduser has no daemon connection to check "
                f"that network {reference!r} is not the host network"
            )
        try:
            network = await self._daemon.inspect_network(reference) if reference else None
        except DaemonError as exc:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}: cannot check that network {reference!r} is not the "
                f"host network ({exc})"
            ) from None
        if network is None and not missing_ok:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}: network {reference!r} does not exist here, so fixeduser "
                "cannot check that it is not the host network"
            )
        return network is not None and network.is_host

    async def _check_network_attach(self, ctx: Context) -> None:
        """Connecting or disconnecting a container changes that container: its owner's (or `others`) call."""
        connect = ctx.api.action == "network.connect"
        what = "network connect" if connect else "network disconnect"
        attach = _parsed(ctx, lambda: parse_network_attach(ctx.request.body, connect=connect), what)
        record = await self._resolve_container(ctx, attach.container, inspect=False)
        self._check_owned(ctx, record, "container", repr(attach.container))
        network = ctx.api.target or ""
        found = endpoint_sysctl_escalations({network: attach.sysctls} if attach.sysctls is not None else {})
        for link in attach.links:
            container = link.split(":", 1)[0]
            linked = await self._resolve_container(ctx, container, inspect=False)
            if linked is None or linked.owner != ctx.subject:
                found.append(Escalation(kind="links", detail=f"--link {container}"))
        self._require_escalations(ctx, found, f"connect container {attach.container!r} to a network")

    async def _check_task_action(self, ctx: Context) -> None:
        """A task belongs to its service's creator; the daemon says which service a task ID is of."""
        if ctx.policy.decide(ctx.subject, OTHERS_OBJECT, ctx.api.action).allowed:
            return  # anyone's task: no need to ask whose it is
        reference = ctx.api.target or ""
        if self._daemon is None:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action} {reference}: fixeduser has no daemon connection to check "
                "whose task it is"
            )
        try:
            task = await self._daemon.inspect_task(reference)
        except DaemonError as exc:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action} {reference}: cannot check whose task it is ({exc})"
            ) from None
        service = self._ledger.services.find(task.service_id) if task is not None and task.service_id else None
        self._check_owned(ctx, service, "service's task")

    def _is_ours(self, mount: MountSpec) -> bool:
        if mount.type != "volume":
            return False
        return self._is_our_driver(mount.volume_driver) or (bool(mount.source) and mount.source in self._registry)

    async def _check_container_action(self, ctx: Context) -> None:
        reference = ctx.api.target or ""
        mounting = ctx.api.action in MOUNTING_ACTIONS
        container = await self._resolve_container(ctx, reference, inspect=mounting)
        self._check_owned(ctx, container, "container")
        if ctx.api.action == "exec.create":
            exec_create = _parsed(ctx, lambda: parse_exec_create(ctx.request.body), "exec create")
            self._require_escalations(ctx, exec_escalations(exec_create), "exec")
        elif ctx.api.action == "container.rename":
            _deny_id_like_name(ctx, ctx.api.query.get("name", [""])[0])
        if container is not None and mounting:
            await self._check_mounting(ctx, container)

    async def _check_mounting(self, ctx: Context, container: ContainerFacts) -> None:
        """A start, restart or archive call mounts what the daemon has on record for the container
        now: its binds are checked again and its fixeduser volumes claimed for its owner."""
        assert container.inspected is not None
        what = f"{ctx.api.action.partition('.')[2]} container {container.label} now"
        binds = _parsed(ctx, lambda: bind_sources(_host_config_of(container.inspected or {})), "container's HostConfig")
        if binds:
            self._require_escalations(ctx, start_bind_escalations(binds, self._protected), what)
        volumes = self._our_volumes(ctx, container)
        if not volumes:
            return
        if container.owner is None:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action} {container.label}: it mounts fixeduser volumes but was not "
                "created through fixeduser, so it has no owner whose identity could be used; recreate it"
            )
        identities = self._identities_for(ctx, container.owner, dict.fromkeys(volumes))
        await self._claim(ctx, container=container.id, owner=container.owner, volumes=identities)

    async def _resolve_container(self, ctx: Context, reference: str, *, inspect: bool = True) -> ContainerFacts | None:
        """The container the daemon means by `reference` (None: no such container), with its owner.

        The daemon resolves a full ID before names and prefixes, and fixeduser refuses names that look
        like IDs, so a recorded full ID needs no look-up unless the daemon's description is needed.
        """
        if is_full_id(reference) and (record := self._ledger.get(reference)) is not None and not inspect:
            return ContainerFacts(id=record.id, name=record.name, owner=record.owner)
        if not reference:
            return None
        if self._daemon is None:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}: fixeduser has no daemon connection to tell which "
                f"container {reference!r} is"
            )
        try:
            inspected = await self._daemon.inspect_container(reference)
        except DaemonError as exc:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action}: cannot ask the daemon which container {reference!r} is "
                f"({exc})"
            ) from None
        if inspected is None:
            return None
        container_id = inspected.get("Id")
        if not isinstance(container_id, str) or not is_full_id(container_id):
            raise Denied(f"{ctx.subject}: the daemon described container {reference!r} in a way fixeduser cannot check")
        record = self._ledger.get(container_id)
        name = str(inspected.get("Name", "")).lstrip("/")
        return ContainerFacts(id=container_id, name=name, owner=record.owner if record else None, inspected=inspected)

    def _is_our_driver(self, name: str) -> bool:
        """The daemon names a managed plugin's driver NAME:latest and accepts plain NAME for it."""
        return bool(name) and _untagged(name) == _untagged(self._driver_name)

    async def _claim(
        self, ctx: Context, *, container: str, owner: str, volumes: dict[str, Identity], for_create: bool = False
    ) -> None:
        try:
            await self._gate.claim(ctx.key, container=container, owner=owner, volumes=volumes, for_create=for_create)
        except GateBusy as exc:
            raise Denied(f"{ctx.subject}: {exc}") from None

    # ---- response phase -----------------------------------------------------------------------

    async def _on_response(self, ctx: Context) -> Verdict:
        action, status = ctx.api.action, ctx.request.status
        if action == "container.create":
            await self._gate.release(ctx.key)
            await self._record_container(ctx)
        elif action in MOUNTING_ACTIONS:
            await self._gate.release(ctx.key)
        elif action in ("volume.create", "volume.remove", "volume.prune"):
            self._gate.revoke(ctx.key)
        elif action in ("container.remove", "container.prune") or (
            action == "container.wait" and ctx.api.query.get("condition") == ["removed"]
        ):
            # The status cannot be trusted (0 for failures, or a 200 flushed before the work is done):
            # the ledger forgets a container only once the daemon no longer lists it.
            self._on_removal()
        elif action == "exec.create" and status == 201:
            await self._record_exec(ctx)
        elif action == "service.create" and status == 201:
            service_id = _parsed(ctx, lambda: parse_service_create_response(ctx.request.response_body),
                                 "service create response")  # fmt: skip
            spec = _parsed(ctx, lambda: parse_service_spec(ctx.request.body), "service spec")
            await self._ledger.services.record(OwnedRecord(id=service_id, name=spec.name, owner=ctx.subject))
        elif action == "service.remove" and status == 200:
            await self._ledger.services.forget(ctx.api.target or "")
        return Verdict(allow=True, message="response passed")

    async def _record_exec(self, ctx: Context) -> None:
        exec_id = _parsed(ctx, lambda: parse_exec_create_response(ctx.request.response_body), "exec create response")
        try:
            container = await self._resolve_container(ctx, ctx.api.target or "", inspect=False)
        except Denied:
            container = None
        # The exec belongs to whoever owns its container (the creator when fixeduser has no owner).
        await self._ledger.execs.record(
            OwnedRecord(
                id=exec_id,
                name="",
                owner=container.owner or ctx.subject if container else ctx.subject,
                container=container.id if container else "",
            )
        )

    async def _record_container(self, ctx: Context) -> None:
        """The owner of a new container, by the ID in the daemon's answer: only a created container has one
        (the status may be 0 even then), so whatever the status says, an ID is recorded and an error is not."""
        try:
            container_id = parse_create_response(ctx.request.response_body)
        except (BodyError, ValueError):
            return
        if not is_full_id(container_id):
            return
        name = ctx.api.query.get("name", [""])[0].lstrip("/")
        await self._ledger.record(ContainerRecord(id=container_id, name=name, owner=ctx.subject))


# AuthZReq and AuthZRes of one container create carry the same body: parse it once for both.
# The result is a frozen model that no caller changes; failures are not cached and deny each time.
# Only bodies of ordinary size are cached, so the cache stays small whatever users send (256 x 64 KiB).
CACHED_BODY_LENGTH = 64 * 1024
_parse_create_cached = functools.lru_cache(maxsize=256)(parse_container_create)


def _parse_create(body: bytes) -> ContainerCreate:
    return _parse_create_cached(body) if len(body) <= CACHED_BODY_LENGTH else parse_container_create(body)


def _parsed(ctx: Context, parse: Callable[[], T], what: str) -> T:
    try:
        return parse()
    except (BodyError, ValueError) as exc:
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}: fixeduser cannot read the {what} body ({exc}) "
            "and denies what it cannot check"
        ) from None


# npipe is Windows-only; cluster (CSI) and image mounts are not modelled: deny what is not checked.
CHECKED_MOUNT_TYPES = frozenset({"bind", "volume", "tmpfs"})


def _deny_unknown_mounts(ctx: Context, mounts: Iterable[MountSpec]) -> None:
    unknown = sorted({m.raw_type for m in mounts if m.type not in CHECKED_MOUNT_TYPES})
    if unknown:
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}: mount type(s) {', '.join(map(repr, unknown))} are not ones "
            "fixeduser can check (bind, volume and tmpfs; types are case-sensitive)"
        )


@functools.lru_cache(maxsize=4096)  # the same few lines decide most requests: format each once
def _citation(rule: PolicyLine) -> str:
    return f"{rule.where}: {rule.text}"


def _deny_old_api(subject: str, version: str | None) -> None:
    if is_too_old(version):
        raise Denied(
            f"{subject}: API version {version} is older than {MIN_API_VERSION}, the oldest fixeduser allows "
            f"(daemons before 26.1 still apply settings that version {version} sends where fixeduser does not "
            f"check them); use API {MIN_API_VERSION} or newer"
        )


def _deny_hidden_body(ctx: Context) -> None:
    content_length = ctx.request.header("Content-Length")
    if body_presence(bool(ctx.request.body_b64), content_length) == "hidden":
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}: the request body is missing from what the daemon sent "
            f"fixeduser ({hidden_body_reason(content_length)}), and fixeduser denies what it cannot check"
        )


def _is_form_body(request: AuthZRequest) -> bool:
    content_type = (request.header("Content-Type") or "").lower()
    return content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def _untagged(driver: str) -> str:
    return driver.removesuffix(":latest")


def _deny_id_like_name(ctx: Context, name: str) -> None:
    """A container named like another's full ID would shadow it wherever IDs are resolved by name."""
    if is_full_id(name.lstrip("/")):
        raise Denied(
            f"{ctx.subject} may not name a container {name!r}: 64 hexadecimal digits is what container IDs look like"
        )


def _referenced_containers(create: ContainerCreate) -> set[str]:
    """Containers a create names (volumes-from, links, `container:X` namespaces), as written."""
    host = create.host_config
    references = {source.split(":", 1)[0] for source in host.volumes_from}
    references |= {link.split(":", 1)[0] for link in [*host.links, *create.endpoint_links]}
    for field in NAMESPACE_MODES:
        kind, _, reference = str(getattr(host, field)).partition(":")
        if kind == "container" and reference:
            references.add(reference)
    return references


def _host_config_of(inspected: dict[str, Any]) -> ContainerCreate:
    """A container's HostConfig as the daemon describes it, read like the one of a create body."""
    return parse_container_create(orjson.dumps({"HostConfig": inspected.get("HostConfig") or {}}))
