"""Volume metadata and active mounts, kept in memory and persisted in the state store.

The store is written *before* memory changes, so a failed write leaves memory as it was and
what is in memory is always what a restarted plugin will load.

With a `Cluster` (many hosts), the volume records' truth is the shared database: changes are made
in a transaction holding the volume's cluster-wide lock (`changing`, `using`), each of which first
reads the volume's shared record; the local `volumes` table is then a read cache of it, for
mounts while the database is away. Mount records stay this host's own, and are also written as
rows of the shared "in use" table.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fixeduser.policy.identity import Identity
from fixeduser.state.records import MountRecord, VolumeRecord
from fixeduser.state.store import StateStore

if TYPE_CHECKING:
    from fixeduser.state.cluster import RemoteMount
    from fixeduser.state.cluster_database import Cluster, ClusterTx

log = logging.getLogger(__name__)


class VolumeRegistry:
    """Callers serialize changes per volume (the driver's volume locks); reads never wait."""

    def __init__(self, store: StateStore, cluster: Cluster | None = None) -> None:
        self._store = store
        self.cluster = cluster
        self._volumes = {
            name: VolumeRecord.model_validate_json(record)
            for name, record in store.query("SELECT name, record FROM volumes")
        }
        self._mounts = {
            (row[0], row[1]): MountRecord.model_validate(json.loads(row[2]))
            for row in store.query("SELECT mount_id, volume, record FROM mounts")
        }
        self._held: dict[str, ClusterTx] = {}  # volumes whose cluster-wide lock this host holds now
        self._after_commit: dict[str, list[Callable[[], object]]] = {}

    def get(self, name: str) -> VolumeRecord | None:
        return self._volumes.get(name)

    def names(self) -> list[str]:
        return sorted(self._volumes)

    def __contains__(self, name: object) -> bool:
        return name in self._volumes

    # ------------------------------------------------------------------ the cluster-wide lock

    @asynccontextmanager
    async def changing(self, name: str, *, doing: str) -> AsyncIterator[None]:
        """Hold `name` against every other host (a create, a remove): needs the shared database."""
        async with self._holding(name, exclusive=True, required=True, doing=doing):
            yield

    @asynccontextmanager
    async def using(self, name: str, *, exclusive: bool = False, doing: str) -> AsyncIterator[None]:
        """Hold `name` while recording a mount (shared) or ending one (exclusive: the top-folder restore);
        without the shared database, go on from this host's own records."""
        async with self._holding(name, exclusive=exclusive, required=False, doing=doing):
            yield

    @asynccontextmanager
    async def _holding(self, name: str, *, exclusive: bool, required: bool, doing: str) -> AsyncIterator[None]:
        if self.cluster is None:
            yield
            return
        async with self.cluster.locked(name, exclusive=exclusive, doing=doing, required=required) as tx:
            if tx is None:
                yield
                return
            await self._cache(name, await tx.volume(name))
            self._held[name], self._after_commit[name] = tx, []
            try:
                yield
            except BaseException:
                self._after_commit.pop(name, None)
                raise
            finally:
                self._held.pop(name, None)
        for apply in self._after_commit.pop(name, []):  # committed: now this host's memory and cache follow
            apply()

    async def mounts_elsewhere(self, name: str) -> list[RemoteMount]:
        """The mounts other live hosts hold of `name` (none on a single host, or while the database is away)."""
        held = self._held.get(name)
        return [] if held is None else await held.mounts_elsewhere(name)

    # ------------------------------------------------------------------ volume records

    async def add(self, record: VolumeRecord) -> None:
        if (held := self._shared_write(record.name)) is not None:
            await held.put_volume(record)
        await self._store.write("INSERT OR REPLACE INTO volumes VALUES (?, ?)", (record.name, record.model_dump_json()))
        self._then(record.name, lambda: self._volumes.__setitem__(record.name, record))

    async def remove(self, name: str) -> None:
        if (held := self._shared_write(name)) is not None:
            await held.delete_volume(name)
        await self._store.write("DELETE FROM volumes WHERE name = ?", (name,))
        self._then(name, lambda: self._volumes.pop(name, None))

    def _shared_write(self, name: str) -> ClusterTx | None:
        if self.cluster is None:
            return None
        held = self._held.get(name)
        if held is None:
            raise RuntimeError(f"volume {name} changed without its cluster-wide lock")
        return held

    def _then(self, name: str, apply: Callable[[], object]) -> None:
        """Change memory now on a single host; in a cluster, once the transaction committed."""
        if name in self._after_commit:
            self._after_commit[name].append(apply)
        else:
            apply()

    async def _cache(self, name: str, record: VolumeRecord | None) -> None:
        """Take the shared record of `name` (None: there is none) into memory and the local cache."""
        if record == self._volumes.get(name):
            return
        if record is None:
            await self._store.write("DELETE FROM volumes WHERE name = ?", (name,))
            self._volumes.pop(name, None)
        else:
            await self._store.write("INSERT OR REPLACE INTO volumes VALUES (?, ?)", (name, record.model_dump_json()))
            self._volumes[name] = record

    async def refresh_one(self, name: str) -> VolumeRecord | None:
        """Read `name`'s shared record now (a volume another host created a moment ago); None if there is
        none. Raises `ClusterUnavailable` when the database cannot be read.

        The read runs in a task of its own: callers may have none (decisions and a volume `Get` start where the
        daemon's call arrives, `plugin.http`), and the database pool bounds its waits with timeouts, which from
        Python 3.12 on need one."""
        if self.cluster is not None and name not in self._held:
            await self._cache(name, await asyncio.ensure_future(self.cluster.volume(name)))
        return self._volumes.get(name)

    async def refresh(self) -> int:
        """Take every shared record (at start, on a NOTIFY, after an outage); returns how many changed.

        Raises `ClusterUnavailable` when the database cannot be read: the cache stays as it was."""
        if self.cluster is None:
            return 0
        shared = await self.cluster.volumes()
        changed = 0
        for name in sorted(set(shared) | set(self._volumes)):
            if name in self._held:
                continue  # a change under way here reads its own record
            if shared.get(name) != self._volumes.get(name):
                await self._cache(name, shared.get(name))
                changed += 1
        if changed:
            log.info("volume records taken from the shared database", extra={"changed": changed})
        return changed

    def mount(self, mount_id: str, volume: str) -> MountRecord | None:
        return self._mounts.get((mount_id, volume))

    async def add_mount(self, record: MountRecord) -> None:
        await self._share_mount_change(record.volume, lambda held: held.add_mount(record))
        await self._store.write(
            "INSERT OR REPLACE INTO mounts VALUES (?, ?, ?)",
            (record.mount_id, record.volume, record.model_dump_json()),
        )
        self._mounts[(record.mount_id, record.volume)] = record

    async def remove_mount(self, mount_id: str, volume: str) -> MountRecord | None:
        """Forget a mount at once; its row goes behind (a crash before that commit leaves a record
        of a mount that is over, which the pruner drops: the safe direction, views stay up)."""
        record = self._mounts.pop((mount_id, volume), None)
        if record is not None:
            await self._share_mount_change(volume, lambda held: held.remove_mount(mount_id, volume))
            self._store.write_behind("DELETE FROM mounts WHERE mount_id = ? AND volume = ?", (mount_id, volume))
        return record

    async def _share_mount_change(self, volume: str, change: Callable[[ClusterTx], Awaitable[None]]) -> None:
        """Write a mount change to the shared "in use" rows in the volume's locked transaction; without one
        (the database away, or a change at start), the host's rows are all written again at its next lease."""
        if (held := self._held.get(volume)) is not None:
            await change(held)
        elif self.cluster is not None:
            self.cluster.note_unshared_change()

    def all_mounts(self) -> list[MountRecord]:
        return list(self._mounts.values())

    def mounts_of(self, volume: str) -> list[MountRecord]:
        return [m for m in self._mounts.values() if m.volume == volume]

    def users_of_identity(self, identity: Identity) -> int:
        return sum(1 for m in self._mounts.values() if m.identity == identity)

    def mounts_per_identity(self) -> Counter[str]:
        return Counter(m.identity.key for m in self._mounts.values())
