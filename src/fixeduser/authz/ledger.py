"""Who owns what: containers (filled from container-create responses), and the exec instances and
swarm services that belong to someone (filled from exec-create and service-create responses)."""

from __future__ import annotations

import json
import time

from pydantic import BaseModel, ConfigDict

from fixeduser.state import StateStore, to_json

_MIN_PREFIX = 4
_OWNED_SCHEMA = """
CREATE TABLE IF NOT EXISTS owned_objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL,
    container TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (kind, id)
)
"""


class ContainerRecord(BaseModel):
    """A container fixeduser saw being created, with the fixeduser volumes it mounts."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    owner: str
    volumes: tuple[str, ...]
    restart: bool
    binds: tuple[str, ...] = ()  # host paths it bind-mounts, checked again at every start


def _add_binds_column(store: StateStore) -> None:
    """State files written before binds were recorded: their containers have none on record."""
    columns = {row[1] for row in store.query("PRAGMA table_info(containers)")}
    if "binds" not in columns:
        store.execute("ALTER TABLE containers ADD COLUMN binds TEXT NOT NULL DEFAULT '[]'")


class ContainerLedger:
    """In-memory index of container records (by ID, name, ID prefix), persisted in the state store."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        store.execute(_OWNED_SCHEMA)
        self.execs = OwnedLedger(store, "exec", prefixes=False)
        self.services = OwnedLedger(store, "service", prefixes=True)
        self._by_id: dict[str, ContainerRecord] = {}
        self._by_name: dict[str, str] = {}
        _add_binds_column(store)
        for row in store.query("SELECT id, name, owner, volumes, restart, binds FROM containers ORDER BY created"):
            self._index(
                ContainerRecord(
                    id=row[0],
                    name=row[1],
                    owner=row[2],
                    volumes=tuple(json.loads(row[3])),
                    restart=bool(row[4]),
                    binds=tuple(json.loads(row[5])),
                )
            )

    def _index(self, record: ContainerRecord) -> None:
        previous = self._by_id.get(record.id)
        if previous is not None and self._by_name.get(previous.name) == record.id:
            del self._by_name[previous.name]
        self._by_id[record.id] = record
        if record.name:
            self._by_name[record.name] = record.id

    async def record(self, record: ContainerRecord) -> None:
        self._index(record)
        self._store.write_behind(
            "INSERT OR REPLACE INTO containers (id, name, owner, volumes, restart, created, binds) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.name,
                record.owner,
                to_json(list(record.volumes)),
                int(record.restart),
                time.time(),
                to_json(list(record.binds)),
            ),
        )

    async def rename(self, reference: str, new_name: str) -> None:
        record = self.find(reference)
        if record is not None:
            await self.record(record.model_copy(update={"name": new_name.lstrip("/")}))

    async def forget(self, reference: str) -> None:
        record = self.find(reference)
        if record is None:
            return
        del self._by_id[record.id]
        if self._by_name.get(record.name) == record.id:
            del self._by_name[record.name]
        self._store.write_behind("DELETE FROM containers WHERE id = ?", (record.id,))
        await self.execs.forget_container(record.id)

    def find(self, reference: str) -> ContainerRecord | None:
        """Resolve a reference the way the daemon does: full ID, then exact name, then unique ID prefix."""
        reference = reference.lstrip("/")
        if reference in self._by_id:
            return self._by_id[reference]
        if reference in self._by_name:
            return self._by_id[self._by_name[reference]]
        if len(reference) < _MIN_PREFIX or not all(c in "0123456789abcdef" for c in reference):
            return None
        matches = [record for cid, record in self._by_id.items() if cid.startswith(reference)]
        return matches[0] if len(matches) == 1 else None

    def restartable_using(self, volume: str) -> list[ContainerRecord]:
        """Containers with a restart policy that mount `volume`: the daemon may start them unasked."""
        return [r for r in self._by_id.values() if r.restart and volume in r.volumes]

    def ids(self) -> set[str]:
        return set(self._by_id)

    async def keep_only(self, existing: set[str], *, among: set[str]) -> int:
        """Forget the containers of `among` the daemon no longer has (auto-removed ones); returns how many.

        `among` must be taken before the daemon was asked, so a container recorded meanwhile is kept.
        """
        gone = [cid for cid in among if cid not in existing and cid in self._by_id]
        for cid in gone:
            await self.forget(cid)
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
        rows = store.query(
            "SELECT id, name, owner, container FROM owned_objects WHERE kind = ? ORDER BY created", (kind,)
        )
        for row in rows:
            self._by_id[row[0]] = OwnedRecord(id=row[0], name=row[1], owner=row[2], container=row[3])

    async def record(self, record: OwnedRecord) -> None:
        self._by_id[record.id] = record
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
            del self._by_id[record.id]
            self._store.write_behind("DELETE FROM owned_objects WHERE kind = ? AND id = ?", (self._kind, record.id))

    async def forget_container(self, container_id: str) -> None:
        """Drop the records that belong to a removed container (its exec instances)."""
        gone = [r.id for r in self._by_id.values() if r.container == container_id]
        for oid in gone:
            del self._by_id[oid]
        if gone:
            self._store.write_behind(
                "DELETE FROM owned_objects WHERE kind = ? AND container = ?", (self._kind, container_id)
            )

    def __len__(self) -> int:
        return len(self._by_id)
