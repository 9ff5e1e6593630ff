"""The eight `VolumeDriver.*` calls: metadata, permits, reference counts by mount ID, hand-off."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from fixeduser.handoff import MountGate
from fixeduser.identity import Identity
from fixeduser.policy.access import AccessDenied, subject_identity
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.volumes.backends.base import Backend, BackendError
from fixeduser.volumes.options import OptionError, parse_options
from fixeduser.volumes.registry import MountRecord, VolumeRecord, VolumeRegistry, now_rfc3339
from fixeduser.volumes.resolve import MountIdentityResolver, MountRefused

log = logging.getLogger(__name__)

VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ROOT = Identity(uid=0, gid=0, user="root", group="root")
SHARED_MODE = 0o1777


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
    ) -> None:
        self.backend = backend
        self.registry = registry
        self._gate = gate
        self._resolver = resolver
        self._policy = policy
        self._purge_default = purge_default
        self._identity_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._volume_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def create(self, name: str, options: Mapping[str, str]) -> None:
        _check_name(name)
        async with self._volume_locks[name]:
            if name in self.registry:
                return
            permit = self._gate.take("create", name)
            if permit is None:
                raise DriverError(
                    f"fixeduser volume {name} was not created by an authorized request: create it by name "
                    "(docker volume create -d fixeduser NAME, or --mount with a volume name); "
                    "anonymous fixeduser volumes are not supported"
                )
            try:
                parsed = parse_options(options)
            except OptionError as exc:
                raise DriverError(str(exc)) from None
            owner, mode = self._top_folder_owner(permit.subject, parsed.pinned, parsed.mode, options)
            await self._backend_call(self.backend.create_volume(name, owner=owner, mode=mode))
            await self.registry.add(
                VolumeRecord(
                    name=name,
                    creator=permit.subject,
                    owner=owner,
                    pinned=parsed.pinned,
                    mode=mode,
                    purge=parsed.purge or self._purge_default,
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
        async with self._volume_locks[name]:
            record = self._record(name)
            users = self.registry.mounts_of(name)
            if users:
                raise DriverError(f"volume {name} is in use by {len(users)} container mount(s); stop them first")
            if self._gate.take("remove", name) is None:
                raise DriverError(f"removal of fixeduser volume {name} was not authorized by a docker request")
            await self._backend_call(self.backend.remove_volume(name, purge=record.purge))
            await self.registry.remove(name)
            log.info("volume removed", extra={"volume": name, "purged": record.purge})

    async def mount(self, name: str, mount_id: str) -> str:
        record = self._record(name)
        existing = self.registry.mount(mount_id, name)
        if existing is not None:
            return str(self.backend.volume_path(existing.identity, name))
        try:
            plan = await self._resolver.plan_for(record)
        except MountRefused as exc:
            log.warning("mount refused", extra={"volume": name, "mount_id": mount_id, "reason": str(exc)})
            raise DriverError(str(exc)) from None
        identity = plan.identity
        if plan.copy_up:
            await self._lend_top_folder(record, identity)
        async with self._identity_locks[identity.key]:
            await self._backend_call(self.backend.mount_identity(identity))
            await self.registry.add_mount(
                MountRecord(mount_id=mount_id, volume=name, identity=identity, copy_up=plan.copy_up)
            )
        log.info("volume mounted", extra={"volume": name, "mount_id": mount_id, "identity": identity.key})
        return str(self.backend.volume_path(identity, name))

    async def _lend_top_folder(self, record: VolumeRecord, identity: Identity) -> None:
        """Let the daemon copy image content into an empty volume as `identity`.

        The daemon then gives the top folder the image folder's owner, mode and times, which only
        the folder's owner may do; `unmount` hands the folder back to its configured owner and mode.
        The gate keeps every other identity's requests on this volume waiting meanwhile.
        """
        lent = await self._backend_call(
            self.backend.set_top_folder(record.name, owner=identity, mode=record.mode, only_if_empty=True)
        )
        if lent:
            log.info("top folder lent for the image copy", extra={"volume": record.name, "identity": identity.key})

    async def unmount(self, name: str, mount_id: str) -> None:
        record = await self.registry.remove_mount(mount_id, name)
        if record is None:
            log.warning("unmount of unknown mount ID", extra={"volume": name, "mount_id": mount_id})
            return
        volume = self.registry.get(name)
        if volume is not None and not any(m.copy_up for m in self.registry.mounts_of(name)):
            # The daemon gives an empty volume the owner and mode of the image folder it copies
            # in; the top folder's mode is a volume property here, so it is put back.
            await self._backend_call(self.backend.set_top_folder(name, owner=volume.owner, mode=volume.mode))
        async with self._identity_locks[record.identity.key]:
            if self.registry.users_of_identity(record.identity) == 0:
                await self._backend_call(self.backend.unmount_identity(record.identity))
        log.info("volume unmounted", extra={"volume": name, "mount_id": mount_id})

    async def unmount_idle_views(self) -> None:
        """Unmount every identity view no container uses (at shutdown; views in use stay)."""
        in_use = self.registry.mounts_per_identity()
        for key in await self.backend.mounted_identities():
            if not in_use.get(key):
                uid, gid = (int(part) for part in key.split(":"))
                identity = Identity(uid=uid, gid=gid, user=str(uid), group=str(gid))
                async with self._identity_locks[key]:
                    await self._backend_call(self.backend.unmount_identity(identity))

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


def _check_name(name: str) -> None:
    if not VOLUME_NAME.fullmatch(name) or len(name) > 255:
        raise DriverError(f"invalid volume name {name!r}: use letters, digits, '_', '.', '-'")
