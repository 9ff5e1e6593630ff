"""The driver's side of the hand-off: which identity a `Mount` of a volume must use.

See `fixeduser.handoff` for the claims the authz plugin makes. A mount is done for an identity
only when the evidence names exactly one; otherwise it is refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fixeduser.authz.ledger import ContainerLedger, ContainerRecord
from fixeduser.daemon import DaemonClient, DaemonError
from fixeduser.handoff import MountGate
from fixeduser.identity import Identity
from fixeduser.policy.access import AccessDenied, mount_identity
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.volumes.registry import VolumeRecord


class MountRefused(Exception):
    """The driver cannot be certain whose identity a mount is for."""


@dataclass(frozen=True)
class MountPlan:
    identity: Identity
    copy_up: bool  # a container create is in flight: the daemon may copy image content in
    containers: tuple[str, ...] = ()  # the container(s) the mount may be for (IDs; names for a create)


class MountIdentityResolver:
    def __init__(
        self,
        *,
        gate: MountGate,
        ledger: ContainerLedger,
        policy: Callable[[], CompiledPolicy],
        daemon: DaemonClient | None,
    ) -> None:
        self._gate = gate
        self._ledger = ledger
        self._policy = policy
        self._daemon = daemon

    async def plan_for(self, volume: VolumeRecord) -> MountPlan:
        claims = self._gate.claims_on(volume.name)
        identity = await self._identity_for(volume, {identity for _, identity in claims})
        if claims:
            containers = {c.container for c, _ in claims if c.container}
        else:  # a daemon restart: any restartable container expected to use this identity
            containers = {
                r.id for r in self._ledger.restartable_using(volume.name) if self._expected(r, volume) == identity
            }
        # A live create may copy image content in. All live claims share `identity`, so preparing the
        # volume for that identity's copy cannot hand anything to another identity.
        return MountPlan(
            identity=identity,
            copy_up=any(c.for_create for c, _ in claims),
            containers=tuple(sorted(containers)),
        )

    async def _identity_for(self, volume: VolumeRecord, claimed: set[Identity]) -> Identity:
        if len(claimed) > 1:  # the gate makes this impossible; refuse rather than trust that
            raise MountRefused(f"volume {volume.name} is claimed for several identities at once")
        restartable = self._ledger.restartable_using(volume.name)
        if claimed:
            (identity,) = claimed
            rivals = [r for r in restartable if self._expected(r, volume) != identity]
            if rivals and await self._any_restarting(volume.name, rivals):
                raise MountRefused(
                    f"volume {volume.name} is being mounted both for a start by {identity} and for a "
                    f"daemon restart of a container of another identity; refusing to guess"
                )
            return identity
        return await self._identity_for_daemon_restart(volume, restartable)

    async def _identity_for_daemon_restart(self, volume: VolumeRecord, restartable: list[ContainerRecord]) -> Identity:
        if not restartable:
            raise MountRefused(
                f"no authorized start of a container using volume {volume.name} is in progress, "
                "so fixeduser does not know whose identity to mount it as"
            )
        identities = self._expected_all(restartable, volume)
        if len(identities) == 1:
            return next(iter(identities))
        restarting_ids = await self._restarting_ids(volume.name)
        identities = self._expected_all([r for r in restartable if r.id in restarting_ids], volume)
        if len(identities) == 1:
            return next(iter(identities))
        raise MountRefused(
            f"volume {volume.name} is being mounted by a daemon restart, and "
            f"{len(identities) or 'no'} identities match the restarting containers; refusing to guess"
        )

    def expected_identity(self, container_id: str, volume: VolumeRecord) -> Identity | None:
        """The identity the container mounts `volume` as under today's policy (None: not known here)."""
        record = self._ledger.find(container_id)
        return None if record is None else self._expected(record, volume)

    def _expected(self, record: ContainerRecord, volume: VolumeRecord) -> Identity | None:
        try:
            return mount_identity(self._policy(), record.owner, volume.name, volume.pinned)
        except AccessDenied:
            return None

    def _expected_all(self, records: Iterable[ContainerRecord], volume: VolumeRecord) -> set[Identity]:
        identities = set()
        for record in records:
            try:
                identities.add(mount_identity(self._policy(), record.owner, volume.name, volume.pinned))
            except AccessDenied as exc:
                raise MountRefused(f"container {record.name or record.id[:12]} restarts: {exc}") from exc
        return identities

    async def _restarting_ids(self, volume: str) -> set[str]:
        if self._daemon is None:
            raise MountRefused(f"cannot tell which container restarts with volume {volume}: no --docker-host")
        try:
            states = await self._daemon.container_states(volume)
        except DaemonError as exc:
            raise MountRefused(f"cannot tell which container restarts with volume {volume}: {exc}") from exc
        return {cid for cid, state in states.items() if state == "restarting"}

    async def _any_restarting(self, volume: str, records: list[ContainerRecord]) -> bool:
        restarting = await self._restarting_ids(volume)
        return any(r.id in restarting for r in records)
