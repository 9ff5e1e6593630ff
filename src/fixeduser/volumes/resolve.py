"""The driver's side of the hand-off: which identity a `Mount` of a volume must use.

A `Mount` names no container. Two things can make the daemon mount a fixeduser volume, and both
are read, at the moment of the mount, from sources that a user cannot steer:

- an API request (create, start, restart, archive) that the authz plugin allowed and *claimed*
  the volume for: the claim names the container by the full ID the daemon resolved it to, and
  its owner from the create response the daemon sent (`fixeduser.state.handoff`);
- the daemon's restart manager, restarting a container by its restart policy with no request:
  the daemon lists such a container as `restarting` on the volume until it runs.

The mount is done as identity X only when every such container, claimed or restarting, belongs
to an owner whose identity is X. A restarting container whose owner fixeduser does not know,
owners of different identities, no evidence at all, or a daemon that cannot be asked: refused,
with a message that says which. Whose a mount is, is never inferred from what fixeduser recorded
earlier about restart policies, names or volumes.

The list is asked after the Mount arrived: a list taken earlier (at the start's AuthZReq, say) could be
used by another user's restarting container whose Mount comes first, and mount IDs are random per start.
It is not asked when the daemon has no container that may restart with the volume at all
(`fixeduser.state.restarts`: restart policies as the daemon describes them, known before each start
and each update is allowed): the answer is then "none" for certain, and the look-up was the larger
half of a Mount's cost (bench/NOTES.md#restart-candidates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fixeduser.docker_api.daemon import DaemonError, ListedContainer, is_full_id
from fixeduser.policy.access import AccessDenied, mount_identity
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.identity import Identity
from fixeduser.state.handoff import Claim, MountGate
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.records import VolumeRecord
from fixeduser.state.restarts import RestartCandidates

RESTARTING = ("restarting",)
# Ends every refusal of a mount that no API request announced: the recovery looks for it.
RECOVERY_PROMISE = "fixeduser will start the container itself, as its owner, once it can tell whose it is"


class MountRefused(Exception):
    """The driver cannot be certain whose identity a mount is for."""


@dataclass(frozen=True)
class MountPlan:
    identity: Identity
    copy_up: bool  # a container create is in flight: the daemon may copy image content in
    containers: tuple[str, ...] = ()  # the container(s) the mount may be for (IDs; names for a create)


class RestartLookup(Protocol):
    """The daemon look-up attribution needs (`fixeduser.docker_api.daemon.DaemonClient`)."""

    async def containers_using(self, volume: str, *, states: tuple[str, ...] = ()) -> list[ListedContainer]: ...


class ApiLiveness(Protocol):
    """Whether the daemon's API answers (`fixeduser.docker_api.daemon.DaemonWatch`)."""

    async def wait_serving(self) -> bool: ...

    def down_for(self) -> float: ...


class MountIdentityResolver:
    def __init__(
        self,
        *,
        gate: MountGate,
        ledger: ContainerLedger,
        policy: Callable[[], CompiledPolicy],
        daemon: RestartLookup | None,
        liveness: ApiLiveness | None = None,
        on_unattributed: Callable[[str], None] | None = None,
        candidates: RestartCandidates | None = None,
    ) -> None:
        self._gate = gate
        self._candidates = candidates
        self._ledger = ledger
        self._policy = policy
        self._daemon = daemon
        self._liveness = liveness
        self._on_unattributed = on_unattributed

    async def plan_for(self, volume: VolumeRecord) -> MountPlan:
        claims = self._gate.claims_on(volume.name)
        try:
            return await self._plan(volume, claims)
        except MountRefused:
            if not claims and self._on_unattributed is not None:  # no request announced it: the recovery looks
                self._on_unattributed(volume.name)
            raise

    async def _plan(self, volume: VolumeRecord, claims: list[tuple[Claim, Identity]]) -> MountPlan:
        restarting = await self._restarting(volume.name) if self._may_restart_with(volume.name) else []
        evidence = {claim.container or f"a container {claim.owner} creates": identity for claim, identity in claims}
        for container in restarting:
            evidence[container.id] = self._identity_of_restarting(container, volume)
        identities = set(evidence.values())
        if not identities:
            raise MountRefused(
                f"no authorized start of a container using volume {volume.name} is in progress and the daemon "
                f"shows none restarting, so fixeduser does not know whose identity to mount it as{_promise(claims)}"
            )
        if len(identities) > 1:
            mounting = ", ".join(f"{_short(c)} as {i}" for c, i in sorted(evidence.items()))
            raise MountRefused(
                f"volume {volume.name} is being mounted for containers of different identities at once "
                f"({mounting}); refusing to guess{_promise(claims)}"
            )
        return MountPlan(
            identity=identities.pop(),
            copy_up=any(claim.for_create for claim, _ in claims),
            containers=tuple(sorted({claim.container for claim, _ in claims if claim.container} | {
                c.id for c in restarting
            })),
        )  # fmt: skip

    def _may_restart_with(self, volume: str) -> bool:
        return self._candidates is None or self._candidates.may_restart_with(volume)

    async def _restarting(self, volume: str) -> list[ListedContainer]:
        """The containers the daemon shows restarting (by their restart policy) with `volume` now."""
        if self._daemon is None:
            raise MountRefused(f"cannot ask the daemon which containers restart with volume {volume}: no --docker-host")
        if self._liveness is not None and not await self._liveness.wait_serving():
            raise MountRefused(
                f"the Docker daemon's API has not answered for {self._liveness.down_for():.1f} s (it is starting "
                f"and restoring its containers), so fixeduser cannot tell whose container mounts volume {volume}; "
                f"refused at once so the daemon is not held up; {RECOVERY_PROMISE}"
            )
        try:
            return await self._daemon.containers_using(volume, states=RESTARTING)
        except DaemonError as exc:
            raise MountRefused(f"cannot ask the daemon which containers restart with volume {volume}: {exc}") from None

    def _identity_of_restarting(self, container: ListedContainer, volume: VolumeRecord) -> Identity:
        record = self._ledger.get(container.id)
        if record is None:
            raise MountRefused(
                f"container {_short(container.id)} {_names(container)}restarts with volume {volume.name}, but it was "
                "not created through fixeduser, so no owner's identity can be used; refusing"
            )
        try:
            return mount_identity(self._policy(), record.owner, volume.name, volume.pinned)
        except AccessDenied as exc:
            raise MountRefused(f"container {_short(container.id)} of {record.owner} restarts: {exc}") from None

    def expected_identity(self, container_id: str, volume: VolumeRecord) -> Identity | None:
        """The identity the container mounts `volume` as under today's policy (None: not known here)."""
        record = self._ledger.get(container_id)
        if record is None:
            return None
        try:
            return mount_identity(self._policy(), record.owner, volume.name, volume.pinned)
        except AccessDenied:
            return None


def _short(container: str) -> str:
    return container[:12] if is_full_id(container) else container


def _names(container: ListedContainer) -> str:
    return f"({', '.join(n.lstrip('/') for n in container.names)}) " if container.names else ""


def _promise(claims: Sequence[object]) -> str:
    return "" if claims else f"; {RECOVERY_PROMISE}"
