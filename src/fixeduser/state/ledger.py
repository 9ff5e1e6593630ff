"""Who owns what: containers (filled from container-create responses), and the exec instances and
swarm services that belong to someone (filled from exec-create and service-create responses)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ConfigDict

from fixeduser.state.store import StateStore

PRUNE_SLICE = 500  # containers forgotten between two yields to the event loop

_OWNED_SCHEMA = """
CREATE TABLE IF NOT EXISTS owned_objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL,
    container TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (kind, id)
)
"""
# A removed container's exec instances are deleted by container: without it, each such delete read every row.
_OWNED_INDEX = "CREATE INDEX IF NOT EXISTS owned_objects_by_container ON owned_objects (kind, container)"


class ContainerRecord(BaseModel):
    """Who created a container, by the full ID the daemon gave it in the create response.

    That is all fixeduser records about a container: which container a request or a mount is for,
    what it mounts and binds, and whether it restarts are read from the daemon when they matter.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str  # as created; for messages only (a rename is not tracked)
    owner: str


def _add_binds_column(store: StateStore) -> None:
    """State files written before binds were recorded: the column exists so either kind of file opens."""
    columns = {row[1] for row in store.query("PRAGMA table_info(containers)")}
    if "binds" not in columns:
        store.execute("ALTER TABLE containers ADD COLUMN binds TEXT NOT NULL DEFAULT '[]'")


class ContainerLedger:
    """Container owners by full ID, in memory and persisted in the state store.

    Only full IDs are looked up here: names and ID prefixes are resolved by asking the daemon, so
    a rename, a removal or a name the plugin never saw cannot make it mistake one container for
    another. A record is dropped only once the daemon no longer lists its container (`keep_only`).
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store
        store.execute(_OWNED_SCHEMA)
        store.execute(_OWNED_INDEX)
        self.execs = OwnedLedger(store, "exec", prefixes=False)
        self.services = OwnedLedger(store, "service", prefixes=True)
        _add_binds_column(store)
        self._by_id: dict[str, ContainerRecord] = {
            row[0]: ContainerRecord(id=row[0], name=row[1], owner=row[2])
            for row in store.query("SELECT id, name, owner FROM containers ORDER BY created")
        }

    async def record(self, record: ContainerRecord) -> None:
        self._by_id[record.id] = record
        self._store.write_behind(
            "INSERT OR REPLACE INTO containers (id, name, owner, volumes, restart, created, binds) "
            "VALUES (?, ?, ?, '[]', 0, ?, '[]')",
            (record.id, record.name, record.owner, time.time()),
        )

    def get(self, container_id: str) -> ContainerRecord | None:
        """The record of the container with this full ID (None for any other reference)."""
        return self._by_id.get(container_id)

    async def forget(self, container_id: str) -> None:
        if self._by_id.pop(container_id, None) is None:
            return
        self._store.write_behind("DELETE FROM containers WHERE id = ?", (container_id,))
        await self.execs.forget_container(container_id)

    def ids(self) -> set[str]:
        return set(self._by_id)

    async def keep_only(self, existing: set[str], *, among: set[str]) -> int:
        """Forget the containers of `among` the daemon no longer has; returns how many.

        `among` must be taken before the daemon was asked, so a container recorded meanwhile is kept.
        """
        gone = [cid for cid in among if cid not in existing and cid in self._by_id]
        for done, cid in enumerate(gone, 1):
            await self.forget(cid)
            if done % PRUNE_SLICE == 0:
                await asyncio.sleep(0)  # decisions go on between slices of a large prune
        return len(gone)

    def __len__(self) -> int:
        return len(self._by_id)


class OwnedRecord(BaseModel):
    """An exec instance or swarm service, with who may act on it (`container`: an exec's container)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    owner: str
    container: str = ""


class OwnedLedger:
    """Owners of one kind of object, looked up the way the daemon resolves its references."""

    def __init__(self, store: StateStore, kind: str, *, prefixes: bool) -> None:
        self._store = store
        self._kind = kind
        self._prefixes = prefixes
        self._by_id: dict[str, OwnedRecord] = {}
        # A removed container's records are found through this, not by a scan: a prune forgets many
        # containers at once, and a scan for each made it quadratic in the exec instances.
        self._of_container: dict[str, set[str]] = {}
        rows = store.query(
            "SELECT id, name, owner, container FROM owned_objects WHERE kind = ? ORDER BY created", (kind,)
        )
        for row in rows:
            self._add(OwnedRecord(id=row[0], name=row[1], owner=row[2], container=row[3]))

    def _add(self, record: OwnedRecord) -> None:
        self._drop(record.id)
        self._by_id[record.id] = record
        if record.container:
            self._of_container.setdefault(record.container, set()).add(record.id)

    def _drop(self, oid: str) -> None:
        record = self._by_id.pop(oid, None)
        if record is not None and record.container:
            ids = self._of_container.get(record.container)
            if ids is not None:
                ids.discard(oid)
                if not ids:
                    del self._of_container[record.container]

    async def record(self, record: OwnedRecord) -> None:
        self._add(record)
        self._store.write_behind(
            "INSERT OR REPLACE INTO owned_objects VALUES (?, ?, ?, ?, ?, ?)",
            (self._kind, record.id, record.name, record.owner, record.container, time.time()),
        )

    def find(self, reference: str) -> OwnedRecord | None:
        """Exact ID; for kinds the daemon resolves that way, then exact name, then unique ID prefix."""
        if reference in self._by_id:
            return self._by_id[reference]
        if not self._prefixes or not reference:
            return None
        named = [r for r in self._by_id.values() if r.name == reference]
        if len(named) == 1:
            return named[0]
        matches = [r for cid, r in self._by_id.items() if cid.startswith(reference)]
        return matches[0] if len(matches) == 1 else None

    async def forget(self, reference: str) -> None:
        record = self.find(reference)
        if record is not None:
            self._drop(record.id)
            self._store.write_behind("DELETE FROM owned_objects WHERE kind = ? AND id = ?", (self._kind, record.id))

    async def forget_container(self, container_id: str) -> None:
        """Drop the records that belong to a removed container (its exec instances)."""
        gone = self._of_container.pop(container_id, set())
        for oid in gone:
            del self._by_id[oid]
        if gone:
            self._store.write_behind(
                "DELETE FROM owned_objects WHERE kind = ? AND container = ?", (self._kind, container_id)
            )

    def __len__(self) -> int:
        return len(self._by_id)
