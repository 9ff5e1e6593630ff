"""The facts a decision needs from outside the request, gathered in one place: which container a reference is
and who owns it, what a volume or network is, whose a task is. Each comes from the daemon (or, for owners, from
the ledger by the daemon's full ID); whatever cannot be checked is denied here, once, saying why."""

from __future__ import annotations

import asyncio
import binascii
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from fixeduser.authz.decision import ContainerFacts, Context, Denied
from fixeduser.docker_api import MountSpec
from fixeduser.docker_api.daemon import DaemonError, DaemonLookups, InspectedTask, is_full_id
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.registry import VolumeRegistry

RECENT_NAMES = 4096
MAX_REMEMBERED_REFERENCE = 256
# Go's encoder writes a container's inspect answer with its ID first: `{"Id":"<64 hex digits>",` is its
# first 72 bytes, the first 96 characters of its base64. Any other shape is read as a whole.
_ID_PREFIX = b'{"Id":"'
_ID_HEAD_B64 = 96


class RecentNames:
    """Which full ID the daemon last resolved each container reference (a name, an ID prefix) to.

    Only ever a guess: a rename, a removal or a container made without the plugin changes what a name
    means, so nothing is allowed on it alone (`Facts.guessed_owner`). Bounded: references are user input."""

    def __init__(self, size: int = RECENT_NAMES) -> None:
        self._size = size
        self._ids: dict[str, str] = {}

    def get(self, reference: str) -> str | None:
        return self._ids.get(reference)

    def learn(self, reference: str, container_id: str) -> None:
        if not reference or len(reference) > MAX_REMEMBERED_REFERENCE or self._ids.get(reference) == container_id:
            return
        if len(self._ids) >= self._size:
            del self._ids[next(iter(self._ids))]  # the oldest
        self._ids[reference] = container_id

    def forget(self, name: str) -> None:
        """A name about to change hands (a create or rename naming it), with or without its `/`."""
        bare = name.lstrip("/")
        for reference in (name, bare, f"/{bare}"):
            self._ids.pop(reference, None)


EARLY_KEPT = 256  # descriptions asked for at creates and not yet used by a start
EARLY_SECONDS = 30.0  # older ones are not used: a start that late asks the daemon itself


class EarlyDescriptions:
    """The daemon's descriptions of containers it has just created, asked for once each create is answered,
    so that the start which follows (`docker run` starts by the full ID) need not wait for one.

    What a start checks in them (binds, volume mounts and their drivers) cannot change after the create,
    and a full ID names one container for good; each description serves one mounting request, within
    `EARLY_SECONDS` (bench/NOTES.md#early-inspect)."""

    def __init__(self, kept: int = EARLY_KEPT, seconds: float = EARLY_SECONDS) -> None:
        self._kept = kept
        self._seconds = seconds
        self._asked: dict[str, tuple[float, asyncio.Task[dict[str, Any] | None]]] = {}

    def ask(self, container_id: str, daemon: DaemonLookups) -> None:
        if container_id in self._asked:
            return
        if len(self._asked) >= self._kept:
            del self._asked[next(iter(self._asked))]  # the oldest: its answer goes unused
        task = asyncio.get_running_loop().create_task(daemon.inspect_new_container(container_id))
        task.add_done_callback(_retrieved)
        self._asked[container_id] = (time.monotonic(), task)

    async def take(self, container_id: str) -> dict[str, Any] | None:
        """The description asked for at `container_id`'s create, if there is a fresh one (then it is used up)."""
        asked = self._asked.pop(container_id, None)
        if asked is None or time.monotonic() - asked[0] > self._seconds:
            return None
        try:
            described = await asyncio.shield(asked[1])
        except DaemonError:
            return None
        return described if described is not None and described.get("Id") == container_id else None


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A failed early look-up is not an error: the start asks again."""
    if not task.cancelled():
        task.exception()


@dataclass
class Facts:
    daemon: DaemonLookups | None
    ledger: ContainerLedger
    registry: VolumeRegistry
    driver_name: str
    recent: RecentNames = field(default_factory=RecentNames)
    early: EarlyDescriptions = field(default_factory=EarlyDescriptions)

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
        if is_full_id(reference) and (early := await self.early.take(reference)) is not None:
            return self._described(ctx, reference, early)
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
        return self._described(ctx, reference, inspected)

    def ask_early(self, container_id: str) -> None:
        """Ask the daemon now for the description a start of the just-created `container_id` will need."""
        if self.daemon is not None:
            self.early.ask(container_id, self.daemon)

    def _described(self, ctx: Context, reference: str, inspected: dict[str, Any]) -> ContainerFacts:
        container_id = inspected.get("Id")
        if not isinstance(container_id, str) or not is_full_id(container_id):
            raise Denied(f"{ctx.subject}: the daemon described container {reference!r} in a way fixeduser cannot check")
        self.recent.learn(reference, container_id)
        record = self.ledger.get(container_id)
        name = str(inspected.get("Name", "")).lstrip("/")
        return ContainerFacts(id=container_id, name=name, owner=record.owner if record else None, inspected=inspected)

    def guessed_owner(self, reference: str) -> str | None:
        """The owner of the container the daemon last said `reference` is: a guess (names change hands),
        only for requests whose answer says which container it was (`answered_container`)."""
        container_id = self.recent.get(reference)
        record = self.ledger.get(container_id) if container_id else None
        return record.owner if record else None

    async def answered_container(self, ctx: Context, reference: str) -> ContainerFacts | None:
        """The container a `GET /containers/{reference}/json` was answered about, by the daemon's answer
        itself (None: no such container); asked again when the answer does not say."""
        status = ctx.request.status
        container_id = answered_id(ctx.request.response_body_b64) if status in (0, 200) else None
        if container_id is not None:
            self.recent.learn(reference, container_id)
            record = self.ledger.get(container_id)
            return ContainerFacts(id=container_id, name=record.name if record else "",
                                  owner=record.owner if record else None)  # fmt: skip
        if status == 404:
            return None
        return await self.container(ctx, reference, inspect=False)

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
        """The daemon's description of a volume (None: it does not exist)."""
        if self.daemon is None:
            raise Denied(
                f"{ctx.subject} may not use volume {name}: fixeduser has no daemon connection to check what it "
                "mounts (a volume made with driver options mounts what they name: a `local` one is a bind mount)"
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
        return names_driver(name, self.driver_name)

    def is_ours(self, mount: MountSpec) -> bool:
        if mount.type != "volume":
            return False
        return self.is_our_driver(mount.volume_driver) or (bool(mount.source) and mount.source in self.registry)


def answered_id(body_b64: str | None) -> str | None:
    """The full container ID a daemon's inspect answer (base64, as the daemon sends it) is about, or None."""
    if not body_b64:
        return None
    try:
        head = binascii.a2b_base64(body_b64[:_ID_HEAD_B64], strict_mode=True)
        found: object
        if head.startswith(_ID_PREFIX) and head.endswith(b'"'):
            found = head[len(_ID_PREFIX) : -1].decode("ascii")
        else:
            answer = orjson.loads(binascii.a2b_base64(body_b64, strict_mode=True))
            found = answer.get("Id") if isinstance(answer, dict) else None
    except (binascii.Error, ValueError):
        return None
    return found if isinstance(found, str) and is_full_id(found) else None


def untagged(driver: str) -> str:
    return driver.removesuffix(":latest")


def names_driver(name: str, driver: str) -> bool:
    """Whether the daemon's driver `name` is `driver`: it names a managed plugin's driver NAME:latest and
    accepts plain NAME for it."""
    return bool(name) and untagged(name) == untagged(driver)
