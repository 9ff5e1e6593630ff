"""Requests that concern containers: creates (escalations, volumes), actions on one (its owner's), the starts,
restarts and archive calls that mount its volumes, network attach, builds, and exec instances."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fixeduser.authz.decision import (
    MOUNTING_ACTIONS,
    ContainerFacts,
    Context,
    Denied,
    check_owned,
    parsed,
    require_escalations,
)
from fixeduser.authz.facts import Facts
from fixeduser.authz.networks import network_mode_reference, parse_network_attach
from fixeduser.authz.volume_checks import VolumeChecks, named_volumes
from fixeduser.docker_api import (
    ContainerCreate,
    MountSpec,
    check_start_body,
    described_bind_sources,
    parse_container_create,
    parse_exec_create,
)
from fixeduser.docker_api.daemon import is_full_id
from fixeduser.policy.escalations import (
    NAMESPACE_MODES,
    Escalation,
    build_escalations,
    container_escalations,
    endpoint_sysctl_escalations,
    exec_escalations,
    start_bind_escalations,
    start_escalations,
)
from fixeduser.policy.identity import Identity
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.restarts import RestartCandidates, restart_policy_of

# npipe is Windows-only; cluster (CSI) and image mounts are not modelled: deny what is not checked.
CHECKED_MOUNT_TYPES = frozenset({"bind", "volume", "tmpfs"})
# Only bodies of ordinary size are cached, so the cache stays small whatever users send (256 x 64 KiB).
CACHED_BODY_LENGTH = 64 * 1024


@dataclass
class ContainerChecks:
    facts: Facts
    volumes: VolumeChecks
    ledger: ContainerLedger
    protected: tuple[Path, ...]
    restarts: RestartCandidates | None = None

    async def check_create(self, ctx: Context) -> None:
        deny_id_like_name(ctx, ctx.api.query.get("name", [""])[0])
        self.facts.recent.forget(ctx.api.query.get("name", [""])[0])
        create = parsed(ctx, lambda: parse_create(ctx.request.body), "container create")
        deny_unknown_mounts(ctx, create.host_config.mounts)
        referenced = {ref: await self.facts.container(ctx, ref) for ref in sorted(_referenced_containers(create))}
        found = container_escalations(
            create,
            protected=self.protected,
            is_foreign_container=lambda ref: (facts := referenced.get(ref)) is None or facts.owner != ctx.subject,
            is_our_driver=self.facts.is_our_driver,
        )
        names = named_volumes(create)
        await self.volumes.learn(names)
        found += await self.volumes.chosen_by_options(ctx, names)
        network = network_mode_reference(create.host_config.network_mode)
        if network is not None and await self.facts.is_host_network(ctx, network, missing_ok=True):
            found.append(Escalation(kind="namespaces", detail=f"--network={network} (the host network)"))
        require_escalations(ctx, found, "create a container")
        volumes = self._container_volumes(ctx, create, referenced)
        await self.volumes.claim(
            ctx, container=ctx.api.query.get("name", [""])[0], owner=ctx.subject, volumes=volumes, for_create=True
        )

    def _container_volumes(
        self, ctx: Context, create: ContainerCreate, referenced: dict[str, ContainerFacts | None]
    ) -> dict[str, Identity]:
        """Fixeduser volumes this container will mount, each with the identity it mounts as."""
        host = create.host_config
        ours_by_default = self.facts.is_our_driver(host.volume_driver)
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
            driver_is_ours = self.facts.is_our_driver(mount.volume_driver)
            if not mount.source:
                anonymous_ours = anonymous_ours or driver_is_ours
            else:
                named[mount.source] = dict(mount.volume_driver_opts) if driver_is_ours else None
        if (anonymous and ours_by_default) or anonymous_ours:
            raise Denied(
                f"{ctx.subject} may not create anonymous fixeduser volumes: give each volume a name (-v NAME:/path)"
            )
        for source in host.volumes_from:
            for volume in self.facts.our_volumes(ctx, referenced.get(source.split(":", 1)[0])):
                named.setdefault(volume, None)
        return self.volumes.identities_for(ctx, ctx.subject, named)

    async def check_action(self, ctx: Context) -> None:
        """An action on one container: its owner's; a mounting one claims its volumes for that owner."""
        reference = ctx.api.target or ""
        if ctx.api.action == "container.inspect" and self._answer_tells(ctx, reference):
            return
        mounting = ctx.api.action in MOUNTING_ACTIONS
        container = await self.facts.container(ctx, reference, inspect=mounting)
        check_owned(ctx, container, "container")
        if ctx.api.action == "exec.create":
            exec_create = parsed(ctx, lambda: parse_exec_create(ctx.request.body), "exec create")
            require_escalations(ctx, exec_escalations(exec_create), "exec")
        elif ctx.api.action == "container.rename":
            deny_id_like_name(ctx, ctx.api.query.get("name", [""])[0])
            self.facts.recent.forget(ctx.api.query.get("name", [""])[0])
            self.facts.recent.forget(reference)
        if container is not None and mounting:
            await self._check_mounting(ctx, container)

    def _answer_tells(self, ctx: Context, reference: str) -> bool:
        """Whether an inspect can be allowed without asking the daemon which container `reference` is now:
        when the daemon last said it is the subject's own. The daemon withholds its answer until the AuthZRes
        allows it, and the answer names the container, which is checked then (`check_inspect_answer`). Saves
        a daemon look-up per `docker inspect NAME` (bench/NOTES.md#inspect-answer)."""
        return not is_full_id(reference) and self.facts.guessed_owner(reference) == ctx.subject

    async def check_inspect_answer(self, ctx: Context) -> None:
        """The container an inspect by name or ID prefix was answered about is the subject's (or `others`)."""
        reference = ctx.api.target or ""
        if not is_full_id(reference):
            check_owned(ctx, await self.facts.answered_container(ctx, reference), "container")

    async def _check_mounting(self, ctx: Context, container: ContainerFacts) -> None:
        """A start, restart or archive call mounts what the daemon has on record for the container
        now: its binds are checked again and its fixeduser volumes claimed for its owner."""
        what = f"{ctx.api.action.partition('.')[2]} container {container.label} now"
        host_config = (container.inspected or {}).get("HostConfig")
        binds = parsed(ctx, lambda: described_bind_sources(host_config), "container's HostConfig")
        if binds:
            require_escalations(ctx, start_bind_escalations(binds, self.protected), what)
        volumes = self.facts.our_volumes(ctx, container)
        if not volumes:
            return
        if self.restarts is not None:  # before the start is allowed: the restart manager restarts what ran
            self.restarts.note(container.id, restart_policy_of(container.inspected or {}), volumes)
        if container.owner is None:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action} {container.label}: it mounts fixeduser volumes but was not "
                "created through fixeduser, so it has no owner whose identity could be used; recreate it"
            )
        await self.volumes.learn(volumes)
        identities = self.volumes.identities_for(ctx, container.owner, dict.fromkeys(volumes))
        await self.volumes.claim(ctx, container=container.id, owner=container.owner, volumes=identities)

    def check_start_request(self, ctx: Context) -> None:
        """A start carries no body, and restoring a checkpoint is an escalation."""
        if ctx.request.body_b64:
            parsed(ctx, lambda: check_start_body(ctx.request.body), "container start")
        found = start_escalations(ctx.api.query)
        if found:
            require_escalations(ctx, found, f"start container {ctx.api.target}")

    def check_exec(self, ctx: Context) -> None:
        """An exec instance (by exec ID) is the owner's of its container."""
        check_owned(ctx, self.ledger.execs.find(ctx.api.target or ""), "exec instance")

    async def check_network_attach(self, ctx: Context) -> None:
        """Connecting or disconnecting a container changes that container: its owner's (or `others`) call."""
        connect = ctx.api.action == "network.connect"
        what = "network connect" if connect else "network disconnect"
        attach = parsed(ctx, lambda: parse_network_attach(ctx.request.body, connect=connect), what)
        record = await self.facts.container(ctx, attach.container, inspect=False)
        check_owned(ctx, record, "container", repr(attach.container))
        network = ctx.api.target or ""
        found = endpoint_sysctl_escalations({network: attach.sysctls} if attach.sysctls is not None else {})
        for link in attach.links:
            container = link.split(":", 1)[0]
            linked = await self.facts.container(ctx, container, inspect=False)
            if linked is None or linked.owner != ctx.subject:
                found.append(Escalation(kind="links", detail=f"--link {container}"))
        require_escalations(ctx, found, f"connect container {attach.container!r} to a network")

    async def check_build(self, ctx: Context) -> None:
        """A build's query sets up its RUN containers: checked like a container create's HostConfig."""
        found = build_escalations(ctx.api.query)
        network = network_mode_reference((ctx.api.query.get("networkmode") or [""])[0])
        if network is not None and await self.facts.is_host_network(ctx, network, missing_ok=True):
            found.append(Escalation(kind="namespaces", detail=f"docker build --network {network} (the host network)"))
        require_escalations(ctx, found, "build an image")


# AuthZReq and AuthZRes of one container create carry the same body: parse it once for both.
# The result is a frozen model that no caller changes; failures are not cached and deny each time.
_parse_create_cached = functools.lru_cache(maxsize=256)(parse_container_create)


def parse_create(body: bytes) -> ContainerCreate:
    return _parse_create_cached(body) if len(body) <= CACHED_BODY_LENGTH else parse_container_create(body)


def deny_unknown_mounts(ctx: Context, mounts: Iterable[MountSpec]) -> None:
    unknown = sorted({m.raw_type for m in mounts if m.type not in CHECKED_MOUNT_TYPES})
    if unknown:
        raise Denied(
            f"{ctx.subject} may not {ctx.api.action}: mount type(s) {', '.join(map(repr, unknown))} are not ones "
            "fixeduser can check (bind, volume and tmpfs; types are case-sensitive)"
        )


def deny_id_like_name(ctx: Context, name: str) -> None:
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
