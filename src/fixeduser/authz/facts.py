"""The facts a decision needs from outside the request, gathered in one place: which container a reference is
and who owns it, what a volume or network is, whose a task is. Each comes from the daemon (or, for owners, from
the ledger by the daemon's full ID); whatever cannot be checked is denied here, once, saying why."""

from __future__ import annotations

from dataclasses import dataclass

from fixeduser.authz.decision import ContainerFacts, Context, Denied
from fixeduser.docker_api import MountSpec
from fixeduser.docker_api.daemon import DaemonError, DaemonLookups, InspectedTask, is_full_id
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.registry import VolumeRegistry


@dataclass
class Facts:
    daemon: DaemonLookups | None
    ledger: ContainerLedger
    registry: VolumeRegistry
    driver_name: str

    def _daemon(self, ctx: Context, what: str) -> DaemonLookups:
        if self.daemon is None:
            raise Denied(f"{ctx.subject} may not {ctx.api.action}: fixeduser has no daemon connection to {what}")
        return self.daemon

    async def container(self, ctx: Context, reference: str, *, inspect: bool = True) -> ContainerFacts | None:
        """The container the daemon means by `reference` (None: no such container), with its owner.

        The daemon resolves a full ID before names and prefixes, and fixeduser refuses names that look
        like IDs, so a recorded full ID needs no look-up unless the daemon's description is needed.
        """
        if is_full_id(reference) and (record := self.ledger.get(reference)) is not None and not inspect:
            return ContainerFacts(id=record.id, name=record.name, owner=record.owner)
        if not reference:
            return None
        daemon = self._daemon(ctx, f"tell which container {reference!r} is")
        try:
            inspected = await daemon.inspect_container(reference)
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
        record = self.ledger.get(container_id)
        name = str(inspected.get("Name", "")).lstrip("/")
        return ContainerFacts(id=container_id, name=name, owner=record.owner if record else None, inspected=inspected)

    def our_volumes(self, ctx: Context, container: ContainerFacts | None) -> list[str]:
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
            if m.get("Type") == "volume" and self.is_our_driver(str(m.get("Driver", "")))
        )

    async def volume(self, ctx: Context, name: str) -> dict[str, object] | None:
        """The daemon's description of a volume that is not fixeduser's (None: it does not exist)."""
        if self.daemon is None:
            raise Denied(
                f"{ctx.subject} may not use volume {name}: fixeduser has no daemon connection to check "
                "that it is not a bind mount in disguise"
            )
        try:
            return await self.daemon.inspect_volume(name)
        except DaemonError as exc:
            raise Denied(f"{ctx.subject} may not use volume {name}: cannot check what it is ({exc})") from None

    async def is_host_network(self, ctx: Context, reference: str, *, missing_ok: bool) -> bool:
        """Whether the daemon resolves `reference` to the host network; Denied when it cannot say.

        `missing_ok`: a container may name a network that does not exist yet (its start fails until
        it does); a new network can never be the host network, whose name and ID are taken.
        """
        daemon = self._daemon(ctx, f"check that network {reference!r} is not the host network")
        try:
            network = await daemon.inspect_network(reference) if reference else None
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

    async def task(self, ctx: Context, reference: str) -> InspectedTask | None:
        """The swarm task the daemon resolves `reference` to."""
        if self.daemon is None:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action} {reference}: fixeduser has no daemon connection to check "
                "whose task it is"
            )
        try:
            return await self.daemon.inspect_task(reference)
        except DaemonError as exc:
            raise Denied(
                f"{ctx.subject} may not {ctx.api.action} {reference}: cannot check whose task it is ({exc})"
            ) from None

    def is_our_driver(self, name: str) -> bool:
        """The daemon names a managed plugin's driver NAME:latest and accepts plain NAME for it."""
        return bool(name) and untagged(name) == untagged(self.driver_name)

    def is_ours(self, mount: MountSpec) -> bool:
        if mount.type != "volume":
            return False
        return self.is_our_driver(mount.volume_driver) or (bool(mount.source) and mount.source in self.registry)


def untagged(driver: str) -> str:
    return driver.removesuffix(":latest")
