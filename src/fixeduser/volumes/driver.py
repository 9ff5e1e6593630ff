"""The eight `VolumeDriver.*` calls: metadata, permits, reference counts by mount ID, hand-off."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

from fixeduser.docker_api.daemon import DaemonError, ListedContainer
from fixeduser.policy.access import AccessDenied, subject_identity
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.identity import Identity
from fixeduser.state.cluster import ClusterError, RemoteMount
from fixeduser.state.handoff import MountGate
from fixeduser.state.options import OptionError, parse_options
from fixeduser.state.records import MountRecord, VolumeRecord, current_boot_id, new_mount_record, now_rfc3339
from fixeduser.state.registry import VolumeRegistry
from fixeduser.volumes.backends.base import Backend, BackendError, validate_volume_name
from fixeduser.volumes.resolve import MountIdentityResolver, MountRefused
from fixeduser.volumes.surplus import VolumeUse, surplus_records

log = logging.getLogger(__name__)

ROOT = Identity(uid=0, gid=0, user="root", group="root")
SHARED_MODE = 0o1777
# Container states in which a container may hold its volume mounts (`removing`: not sure yet).
LIVE_STATES = frozenset({"running", "paused", "restarting", "removing"})


class ContainerLookup(Protocol):
    """The read-only daemon look-ups the stale-mount pruner needs (`fixeduser.docker_api.daemon.DaemonClient`)."""

    async def containers_using(self, volume: str, *, states: tuple[str, ...] = ()) -> list[ListedContainer]: ...

    async def inspect_container(self, reference: str) -> dict[str, Any] | None: ...


class DriverError(Exception):
    """Shown to the docker user as the driver's `Err`."""


class VolumeDriver:
    def __init__(
        self,
        *,
        backend: Backend,
        registry: VolumeRegistry,
        gate: MountGate,
        resolver: MountIdentityResolver,
        policy: Callable[[], CompiledPolicy],
        purge_default: bool = False,
        daemon: ContainerLookup | None = None,
        view_idle_seconds: float = 60.0,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self._gate = gate
        self._resolver = resolver
        self._policy = policy
        self._purge_default = purge_default
        self._daemon = daemon
        self._identity_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._volume_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # A view no container uses stays mounted this long: `docker run` mounts twice (create-time
        # copy, then start), and each bindfs start costs tens of milliseconds.
        self._view_idle_seconds = view_idle_seconds
        self._idle_timers: dict[str, asyncio.Task[None]] = {}

    async def create(self, name: str, options: Mapping[str, str]) -> None:
        _check_name(name)
        async with self._volume_locks[name], _shown(), self.registry.changing(name, doing=f"creating volume {name}"):
            if name in self.registry:  # here or, in a cluster, on any host
                return
            permit = self._gate.take("create", name)
            if permit is None:
                raise DriverError(
                    f"fixeduser volume {name} was not created by an authorized request: create it by name "
                    "(docker volume create -d fixeduser NAME, or --mount with a volume name); "
                    "anonymous fixeduser volumes are not supported"
                )
            try:
                parsed = parse_options(options, backend=self.backend.name)
            except OptionError as exc:
                raise DriverError(str(exc)) from None
            owner, mode = self._top_folder_owner(permit.subject, parsed.pinned, parsed.mode, options)
            # Backend first, record second: a crash in between leaves storage without a record, which
            # the next Create of the name adopts as it is (backends never empty an existing volume).
            await self._backend_call(self.backend.create_volume(name, owner=owner, mode=mode, options=options))
            await self.registry.add(
                VolumeRecord(
                    name=name,
                    creator=permit.subject,
                    owner=owner,
                    pinned=parsed.pinned,
                    mode=mode,
                    purge=self._purge_default if parsed.purge is None else parsed.purge,
                    created_at=now_rfc3339(),
                    options=dict(options),
                )
            )
            log.info("volume created", extra={"volume": name, "creator": permit.subject})

    def _top_folder_owner(
        self, creator: str, pinned: Identity | None, mode: int, options: Mapping[str, str]
    ) -> tuple[Identity, int]:
        """Pinned: the pin. Otherwise the creator's identity; a creator without one makes a shared,
        sticky folder (like /tmp) so users can add files but not delete each other's."""
        if pinned is not None:
            return pinned, mode
        try:
            return subject_identity(self._policy(), creator), mode
        except AccessDenied:
            return ROOT, mode if "mode" in options else SHARED_MODE

    async def remove(self, name: str) -> None:
        async with self._volume_locks[name], _shown(), self.registry.changing(name, doing=f"removing volume {name}"):
            record = self.registry.get(name)
            if record is None:
                # Nothing to delete: answering success lets the daemon drop its own entry (a retried
                # Remove, or a volume the daemon knew from before a lost state directory).
                log.warning("remove of unknown volume: nothing to do", extra={"volume": name})
                return
            self._refuse_if_in_use(name, await self.registry.mounts_elsewhere(name))
            if self._gate.take("remove", name) is None:
                raise DriverError(f"removal of fixeduser volume {name} was not authorized by a docker request")
            await self._backend_call(self.backend.remove_volume(name, purge=record.purge, options=record.options))
            await self.registry.remove(name)
            log.info("volume removed", extra={"volume": name, "purged": record.purge})

    def _refuse_if_in_use(self, name: str, elsewhere: list[RemoteMount]) -> None:
        here = self.registry.mounts_of(name)
        if not here and not elsewhere:
            return
        hosts = sorted({m.host for m in elsewhere})
        where = " and ".join([*(["this host"] if here else []), *([f"host(s) {', '.join(hosts)}"] if hosts else [])])
        raise DriverError(
            f"volume {name} is in use by {len(here) + len(elsewhere)} container mount(s) on {where}; stop them first"
        )

    async def mount(self, name: str, mount_id: str) -> str:
        """Mount `name` for one container mount point; the same `mount_id` again is the same mount.

        The mount is recorded *before* the view is mounted (write-ahead): a crash in between leaves
        a record the pruner can judge, never a view nobody accounts for. A failure rolls back both.
        """
        record = await self.known(name)
        async with self._volume_locks[name]:
            existing = self.registry.mount(mount_id, name)
        if existing is not None:  # a retried Mount: make sure its view is (still) up
            await self._ensure_view(existing.identity)
            return str(self.backend.volume_path(existing.identity, name))
        try:
            plan = await self._resolver.plan_for(record)
        except MountRefused as exc:
            log.warning("mount refused", extra={"volume": name, "mount_id": mount_id, "reason": str(exc)})
            raise DriverError(str(exc)) from None
        identity = plan.identity
        if record.pinned is not None and identity.key != record.pinned.key:
            # The authz side decided without this record (in a cluster: a volume another host created a moment ago).
            raise DriverError(
                f"fixeduser volume {name} is pinned to {record.pinned}, but this mount was authorized as {identity} "
                "before the volume's record reached this host; try again"
            )
        mount = new_mount_record(mount_id, name, identity, copy_up=plan.copy_up, containers=plan.containers)
        async with self._volume_locks[name], _shown(), self.registry.using(name, doing=f"mounting volume {name}"):
            if name not in self.registry:
                raise DriverError(f"fixeduser volume {name} was removed while it was being mounted")
            if self.registry.get(name) != record:
                raise DriverError(f"fixeduser volume {name} was changed on another host while it was being mounted")
            if (raced := self.registry.mount(mount_id, name)) is not None:
                mount = raced  # a concurrent call with the same ID recorded it first
            else:
                await self.registry.add_mount(mount)
        try:
            # One after the other: running the two side by side took two tasks and loop turns, 84 µs of the
            # daemon's wait when cold against 4 (bench/NOTES.md#mount-steps); nothing runs when a rollback starts.
            await self._ensure_view(mount.identity)
            if mount.copy_up:
                await self._lend_top_folder(record, mount.identity)
            else:
                await self._end_stale_lends(record)
        except BaseException:
            await asyncio.shield(self._roll_back(mount))
            raise
        log.info("volume mounted", extra={"volume": name, "mount_id": mount_id, "identity": identity.key})
        return str(self.backend.volume_path(mount.identity, name))

    async def _ensure_view(self, identity: Identity) -> None:
        async with self._identity_locks[identity.key]:
            await self._backend_call(self.backend.mount_identity(identity))

    async def _roll_back(self, mount: MountRecord) -> None:
        """Undo a failed mount: its record, a lent top folder, and its view if nobody else uses it."""
        try:
            await self._forget(mount)
        except Exception:
            log.exception("rolling back a failed mount failed", extra={"volume": mount.volume})

    async def _lend_top_folder(self, record: VolumeRecord, identity: Identity) -> None:
        """Let the daemon copy image content into an empty volume as `identity`.

        The daemon then gives the top folder the image folder's owner, mode and times, which only
        the folder's owner may do; `unmount` hands the folder back to its configured owner and mode.
        The gate keeps every other identity's requests on this volume waiting meanwhile. An adopted
        volume's folder is never changed: the copy then runs with the folder as it is.
        """
        if record.adopted:
            return
        lent = await self._backend_call(
            self.backend.set_top_folder(record.name, owner=identity, mode=record.mode, only_if_empty=True)
        )
        if lent:
            log.info("top folder lent for the image copy", extra={"volume": record.name, "identity": identity.key})

    async def _end_stale_lends(self, record: VolumeRecord) -> None:
        """A start while no container create is in flight on the volume: no image copy can be running, so the
        copy marks left on other mounts are stale (a start mounted while a create of the same identity was in
        flight is marked like the create's own mount, and keeps the mark as long as it runs). The marks go, and
        the top folder gets back its owner and mode before this start's view is used: else a copy's chmod would
        stay, and the next identity could not write (found by the burst-and-crash test)."""
        name = record.name
        if not any(m.copy_up for m in self.registry.mounts_of(name)) or self._create_in_flight(name):
            return
        doing = f"mounting volume {name}"
        async with self._volume_locks[name], _shown(), self.registry.using(name, exclusive=True, doing=doing):
            stale = [m for m in self.registry.mounts_of(name) if m.copy_up]
            if not stale or self._create_in_flight(name):
                return
            for mount in stale:
                await self.registry.add_mount(mount.model_copy(update={"copy_up": False}))
            if record.adopted or any(m.copy_up for m in await self.registry.mounts_elsewhere(name)):
                return
            await self._backend_call(self.backend.set_top_folder(name, owner=record.owner, mode=record.mode))
            log.info("top folder returned after image copies", extra={"volume": name, "stale_marks": len(stale)})

    def _create_in_flight(self, volume: str) -> bool:
        return any(claim.for_create for claim, _ in self._gate.claims_on(volume))

    async def unmount(self, name: str, mount_id: str) -> None:
        record = self.registry.mount(mount_id, name)
        if record is None:
            log.warning("unmount of unknown mount ID", extra={"volume": name, "mount_id": mount_id})
            return
        if await self._forget(record):
            log.info("volume unmounted", extra={"volume": name, "mount_id": mount_id})

    async def _forget(self, mount: MountRecord) -> bool:
        """Drop one mount record (if it is still there), then tidy up what it leaves unused.

        Once the record is gone the count is right; a failure to tidy up (restore the top folder,
        unmount an idle view) is logged, and the reconciler retries the view later.
        """
        doing = f"unmounting volume {mount.volume}"
        async with (
            self._volume_locks[mount.volume],
            _shown(),
            self.registry.using(mount.volume, exclusive=True, doing=doing),
        ):
            if self.registry.mount(mount.mount_id, mount.volume) != mount:
                return False
            await self.registry.remove_mount(mount.mount_id, mount.volume)
            volume = self.registry.get(mount.volume)
            lent = any(m.copy_up for m in self.registry.mounts_of(mount.volume)) or any(
                m.copy_up for m in await self.registry.mounts_elsewhere(mount.volume)
            )
            if volume is not None and not volume.adopted and not lent:
                # The daemon gives an empty volume the owner and mode of the image folder it copies
                # in; the top folder's mode is a volume property here, so it is put back.
                try:
                    await self.backend.set_top_folder(mount.volume, owner=volume.owner, mode=volume.mode)
                except BackendError as exc:
                    log.warning("cannot restore the top folder", extra={"volume": mount.volume, "error": str(exc)})
        await self._release_view(mount.identity)
        return True

    async def _release_view(self, identity: Identity) -> None:
        if self._view_idle_seconds <= 0:
            await self._unmount_if_idle(identity)
            return
        previous = self._idle_timers.pop(identity.key, None)
        if previous is not None:
            previous.cancel()
        self._idle_timers[identity.key] = asyncio.create_task(self._unmount_after_grace(identity))

    async def _unmount_after_grace(self, identity: Identity) -> None:
        await asyncio.sleep(self._view_idle_seconds)
        self._idle_timers.pop(identity.key, None)
        await self._unmount_if_idle(identity)

    async def _unmount_if_idle(self, identity: Identity) -> None:
        async with self._identity_locks[identity.key]:
            if self.registry.users_of_identity(identity) == 0:
                try:
                    await self.backend.unmount_identity(identity)
                except BackendError as exc:
                    log.warning("cannot unmount an idle view", extra={"identity": identity.key, "error": str(exc)})

    async def unmount_idle_views(self) -> None:
        """Unmount every identity view no container uses (at shutdown and start; views in use stay)."""
        timers = list(self._idle_timers.values())
        self._idle_timers.clear()
        for timer in timers:
            timer.cancel()
        # A timer may be inside an unmount: let it finish (or stop) before views are looked at.
        await asyncio.gather(*timers, return_exceptions=True)
        in_use = self.registry.mounts_per_identity()
        for key in await self.backend.mounted_identities():
            if not in_use.get(key):
                uid, gid = (int(part) for part in key.split(":"))
                identity = Identity(uid=uid, gid=gid, user=str(uid), group=str(gid))
                await self._unmount_if_idle(identity)  # now, not after a grace: at shutdown no timer would run

    # ------------------------------------------------------------------ restarts

    async def reconcile(self) -> None:
        """At start, before serving: make the mounts on this host match the recorded ones.

        Records from an earlier boot are dropped (a reboot ends every mount, and the daemon never
        unmounts what was mounted before it restarted). Views recorded as in use are mounted again
        if missing (e.g. unmounted by hand) or stale (their FUSE daemon died); views nobody uses
        (left by a crash) are unmounted.
        """
        boot = current_boot_id()
        for mount in self.registry.all_mounts():
            if boot and mount.boot_id and mount.boot_id != boot:
                log.info("dropping a mount record from an earlier boot", extra=_mount_log(mount))
                async with self._volume_locks[mount.volume]:
                    await self.registry.remove_mount(mount.mount_id, mount.volume)
        await self._return_lent_top_folders()
        for identity in {m.identity for m in self.registry.all_mounts()}:
            try:
                await self._ensure_view(identity)
            except DriverError as exc:  # the next Mount for it tries again
                log.warning("cannot remount a view in use", extra={"identity": identity.key, "error": str(exc)})
        await self.unmount_idle_views()

    async def _return_lent_top_folders(self) -> None:
        """Give back top folders lent for an image copy before the restart.

        The copy's claim comes back with the journal, but its Unmount, which returns the folder,
        may have been lost with the process: a lent folder (owned by the copying identity) must not
        wait minutes for its record to be pruned while other identities' starts cannot write. A
        copy still running would then fail to set the folder's owner: the create fails, nothing
        is lost."""
        lent = [m for m in self.registry.all_mounts() if m.copy_up]
        for mount in lent:
            async with self._volume_locks[mount.volume]:
                await self.registry.add_mount(mount.model_copy(update={"copy_up": False}))
        for name in sorted({m.volume for m in lent}):
            volume = self.registry.get(name)
            if volume is None or volume.adopted:
                continue
            try:
                await self.backend.set_top_folder(name, owner=volume.owner, mode=volume.mode)
                log.info("top folder of an image copy before the restart returned", extra={"volume": name})
            except BackendError as exc:
                log.warning("cannot restore the top folder", extra={"volume": name, "error": str(exc)})

    async def prune_stale_mounts(self, *, grace: float) -> int:
        """Drop mount records the daemon shows to be over; returns how many.

        A record is only judged when older than `grace` seconds (a Mount's container may not be
        running yet) and while no request that mounts the volume is in flight. It is dropped when
        the daemon answers for certain: the containers it names are gone or not running, or
        finished after the mount (a record from an earlier run whose Unmount was lost while the
        plugin was down); or it is surplus: more records remain than the live containers' mount
        points of the volume (see `fixeduser.volumes.surplus`). Any doubt, or no daemon, keeps it.
        """
        if self._daemon is None:
            return 0
        cutoff = time.time() - grace
        old = [m for m in self.registry.all_mounts() if m.mounted_at <= cutoff]
        pruned = 0
        for volume in sorted({m.volume for m in old}):
            if self._gate.claims_on(volume):
                continue
            try:
                listed = await self._daemon.containers_using(volume)
            except DaemonError as exc:
                log.info("cannot check mount records now", extra={"volume": volume, "error": str(exc)})
                continue
            judged = [m for m in old if m.volume == volume]
            states = {container.id: container.state for container in listed}
            # A create's mount names its container by name (no ID yet); once created, that name is the container.
            ids = {name.lstrip("/"): container.id for container in listed for name in container.names}
            over = [m for m in judged if await self._is_over(m, states, ids)]
            rest = [m for m in judged if m not in over]
            surplus = surplus_records(rest, self._live_uses(volume, listed))
            for mount, reason in [*((m, "over") for m in over), *((m, "surplus") for m in surplus)]:
                if await self._forget(mount):
                    log.warning(
                        "dropped the record of a mount that is over",
                        extra={**_mount_log(mount), "reason": reason, "containers": list(mount.containers)},
                    )
                    pruned += 1
        return pruned

    def _live_uses(self, volume: str, listed: list[ListedContainer]) -> list[VolumeUse]:
        record = self.registry.get(volume)
        return [
            VolumeUse(
                id=container.id,
                names=frozenset(name.lstrip("/") for name in container.names),
                mount_points=container.mount_points_of(volume),
                expected=None if record is None else self._resolver.expected_identity(container.id, record),
            )
            for container in listed
            if container.state in LIVE_STATES
        ]

    async def keep_reconciled(self, *, grace: float, interval: float) -> None:
        """Prune stale mount records now and every `interval` seconds (a background task)."""
        while True:
            try:
                await self.prune_stale_mounts(grace=grace)
            except Exception:  # the task must outlive any one failure; the next round retries
                log.exception("pruning stale mount records failed")
            await asyncio.sleep(interval)

    async def _is_over(self, mount: MountRecord, states: Mapping[str, str], ids: Mapping[str, str]) -> bool:
        assert self._daemon is not None
        # `copy_up` is no evidence: it says a create was in flight, maybe another container's. A record
        # naming a container by name (a create's, or a start's made while creates were in flight) is
        # judged by the container of that name: running and not stopped since, it may hold the mount
        # (the surplus matching then keeps one record per live mount point).
        if not mount.containers:
            return not any(state in LIVE_STATES for state in states.values())
        for container in (ids.get(c, c) for c in mount.containers):
            if states.get(container) not in LIVE_STATES:
                continue  # gone, or not running: this container does not hold the mount
            try:
                info = await self._daemon.inspect_container(container)
            except DaemonError:
                return False
            if info is None:
                continue
            finished = _daemon_time(info.get("State", {}).get("FinishedAt", ""))
            if finished is None or finished < mount.mounted_at:
                return False  # running, and not stopped since the mount: may well hold it
        return True

    # ------------------------------------------------------------------ queries

    def path(self, name: str) -> str:
        record = self._record(name)
        identities = {m.identity for m in self.registry.mounts_of(record.name)}
        if len(identities) == 1:
            return str(self.backend.volume_path(next(iter(identities)), name))
        return ""

    def get(self, name: str) -> dict[str, Any]:
        return self._describe(self._record(name))

    def list(self) -> list[dict[str, Any]]:
        return [self._describe(record) for name in self.registry.names() if (record := self.registry.get(name))]

    def _describe(self, record: VolumeRecord) -> dict[str, Any]:
        mounts: defaultdict[str, int] = defaultdict(int)
        for mount in self.registry.mounts_of(record.name):
            mounts[str(mount.identity)] += 1
        return {
            "Name": record.name,
            "Mountpoint": self.path(record.name),
            "CreatedAt": record.created_at,
            "Status": {
                "identity": f"pinned to {record.pinned}" if record.pinned else "owner of each container",
                "creator": record.creator,
                "mode": f"{record.mode:04o}",
                "purge_on_remove": record.purge,
                "mounts": dict(mounts),
                "backend": self.backend.name,
            },
        }

    async def known(self, name: str) -> VolumeRecord:
        """`name`'s record; in a cluster, a name this host has not heard of yet is read from the database
        (created on another host a moment ago)."""
        record = self.registry.get(name)
        if record is None and self.registry.cluster is not None and self.registry.cluster.available:
            try:
                record = await self.registry.refresh_one(name)
            except ClusterError as exc:
                log.info("cannot read a volume record now", extra={"volume": name, "error": str(exc)})
        if record is None:
            raise DriverError(f"no such fixeduser volume: {name}")
        return record

    def _record(self, name: str) -> VolumeRecord:
        record = self.registry.get(name)
        if record is None:
            raise DriverError(f"no such fixeduser volume: {name}")
        return record

    @staticmethod
    async def _backend_call(call: Any) -> Any:
        try:
            return await call
        except BackendError as exc:
            raise DriverError(str(exc)) from None


@asynccontextmanager
async def _shown() -> AsyncIterator[None]:
    """A shared-state error (database away, a volume locked by another host) as the docker user sees it."""
    try:
        yield
    except ClusterError as exc:
        raise DriverError(str(exc)) from None


def _mount_log(mount: MountRecord) -> dict[str, Any]:
    return {"volume": mount.volume, "mount_id": mount.mount_id, "identity": mount.identity.key}


def _daemon_time(value: str) -> float | None:
    """An RFC 3339 time from the daemon (nanoseconds, `Z`) as epoch seconds; None if unusable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    except ValueError:
        return None
    return stamp + float(fraction or 0)


def _check_name(name: str) -> None:
    try:
        validate_volume_name(name)
    except BackendError as exc:
        raise DriverError(str(exc)) from None
