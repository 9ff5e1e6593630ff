"""Requests that concern fixeduser volumes: create, remove, prune, the identity each mount is claimed for, and
volumes of other drivers made with options (which choose what they mount: a `local` one is a bind mount in disguise)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fixeduser.authz.decision import Context, Denied, parsed, require_escalations
from fixeduser.authz.facts import Facts
from fixeduser.docker_api import ContainerCreate, MountSpec, parse_volume_create
from fixeduser.policy.access import AccessDenied, mount_identity, require_may_assume, require_volume_permission
from fixeduser.policy.escalations import Escalation, driver_options_escalations
from fixeduser.policy.identity import Identity
from fixeduser.state.cluster import ClusterError
from fixeduser.state.handoff import GateBusy, MountGate
from fixeduser.state.options import OptionError, parse_options
from fixeduser.state.registry import VolumeRegistry


@dataclass
class VolumeChecks:
    facts: Facts
    registry: VolumeRegistry
    gate: MountGate

    def identities_for(self, ctx: Context, owner: str, named: dict[str, dict[str, str] | None]) -> dict[str, Identity]:
        """The identity `owner`'s container mounts each fixeduser volume of `named` as; a name whose value holds
        create options is created by our driver if new (permitted here), one whose value is None is not ours."""
        identities: dict[str, Identity] = {}
        for name, create_options in sorted(named.items()):
            record = self.registry.get(name)
            pinned = record.pinned if record else None
            if record is None:
                if create_options is None:
                    continue  # not ours: another driver's volume
                pinned = self.permit_create(ctx, name, create_options)
            try:
                identities[name] = mount_identity(ctx.policy, owner, name, pinned)
            except AccessDenied as exc:
                raise Denied(str(exc)) from None
        return identities

    def permit_create(self, ctx: Context, name: str, options: dict[str, str]) -> Identity | None:
        """Check a fixeduser volume create and let the driver do exactly it; returns the pin."""
        try:
            require_volume_permission(ctx.policy, ctx.subject, name, "create")
            parsed_options = parse_options(options)
            if parsed_options.pinned is not None:
                require_may_assume(ctx.policy, ctx.subject, parsed_options.pinned)
        except AccessDenied as exc:
            raise Denied(str(exc)) from None
        except OptionError as exc:
            raise Denied(f"{ctx.subject} cannot create fixeduser volume {name}: {exc}") from None
        self.gate.grant(ctx.key, kind="create", volume=name, subject=ctx.subject, options=options)
        return parsed_options.pinned

    async def claim(
        self, ctx: Context, *, container: str, owner: str, volumes: dict[str, Identity], for_create: bool = False
    ) -> None:
        """Claim `volumes` for this request (see fixeduser.state.handoff)."""
        try:
            await self.gate.claim(ctx.key, container=container, owner=owner, volumes=volumes, for_create=for_create)
        except GateBusy as exc:
            raise Denied(f"{ctx.subject}: {exc}") from None

    def check_create(self, ctx: Context) -> None:
        create = parsed(ctx, lambda: parse_volume_create(ctx.request.body), "volume create")
        require_escalations(
            ctx,
            driver_options_escalations(
                f"volume {create.name}".rstrip(), create.driver, create.driver_opts, self.facts.is_our_driver
            ),
            "create a volume",
        )
        if not self.facts.is_our_driver(create.driver):
            return
        if not create.name:
            raise Denied(f"{ctx.subject} must give fixeduser volumes a name (docker volume create -d ... NAME)")
        if create.name in self.registry:
            return  # the daemon answers with the existing volume; nothing is created
        self.permit_create(ctx, create.name, create.driver_opts)

    def check_remove(self, ctx: Context) -> None:
        name = ctx.api.target or ""
        if name not in self.registry:
            return
        try:
            require_volume_permission(ctx.policy, ctx.subject, name, "remove")
        except AccessDenied as exc:
            raise Denied(str(exc)) from None
        self.gate.grant(ctx.key, kind="remove", volume=name, subject=ctx.subject, options={})

    def check_prune(self, ctx: Context) -> None:
        if not self.registry.names():
            return
        if not ctx.policy.decide(ctx.subject, "volume:*", "remove").allowed:
            raise Denied(
                f"{ctx.subject} may not prune volumes: pruning can remove any fixeduser volume and needs "
                f"`p, <{ctx.subject} or one of its roles>, volume:*, remove`"
            )
        self.gate.grant(ctx.key, kind="remove", volume="*", subject=ctx.subject, options={})

    async def learn(self, names: Iterable[str]) -> None:
        """In a cluster, read the records of names this host has not heard of yet (made on another host a moment
        ago), so they are judged as the fixeduser volumes they are; a database that cannot be asked changes
        nothing (the driver still refuses a mount its record does not allow)."""
        cluster = self.registry.cluster
        if cluster is None:
            return
        for name in sorted(set(names)):
            if name in self.registry or not cluster.available:
                continue
            try:
                await self.registry.refresh_one(name)
            except ClusterError:
                return

    async def chosen_by_options(self, ctx: Context, names: Iterable[str]) -> list[Escalation]:
        """Existing volumes among `names` that another driver mounts by the options they were made with (a
        `local` one: a bind mount in disguise)."""
        # A --mount with its own driver options creates the volume only if it is new; if it exists the
        # daemon uses it as it is, so every named volume is checked. Names fixeduser has a record of too: the
        # record says what was made through fixeduser, the daemon what this host will mount (another host of a
        # cluster, or an admin, may have made a `local` volume of that name here).
        found = []
        for name in sorted(set(names)):
            inspected = await self.facts.volume(ctx, name)
            if inspected is None:
                continue
            options = inspected.get("Options")
            driver = inspected.get("Driver")
            if not isinstance(driver, str) or (options is not None and not isinstance(options, dict)):
                raise Denied(f"{ctx.subject}: the daemon described volume {name} in a way fixeduser cannot check")
            if name in self.registry and not self.facts.is_our_driver(driver):
                raise Denied(
                    f"{ctx.subject} may not use volume {name}: it is a fixeduser volume, but this daemon's volume of "
                    f"that name is a `{driver}` volume, which would get the data instead (an admin can remove it)"
                )
            options_named = {str(k): str(v) for k, v in (options or {}).items()}
            found += driver_options_escalations(f"volume {name}", driver, options_named, self.facts.is_our_driver)
        return found


def named_volumes(create: ContainerCreate) -> set[str]:
    """The volumes a container create names (-v NAME:... and --mount source=NAME)."""
    host = create.host_config
    return {b.source for b in host.binds if b.kind == "volume"} | named_mount_volumes(host.mounts)


def named_mount_volumes(mounts: Iterable[MountSpec]) -> set[str]:
    return {m.source for m in mounts if m.type == "volume" and m.source}
