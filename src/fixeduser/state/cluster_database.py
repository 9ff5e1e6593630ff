"""Many hosts, one truth: volume records, who mounts what, and cluster-wide locks, in PostgreSQL.

One table of volume records is the truth for every host; each host keeps a read cache of it in its
own SQLite, so mounts of known volumes go on while the database is away. Each host writes the
mounts it holds as rows under its host ID and renews a lease; a volume is in use while any host
with a live lease holds a row for it. A host whose lease ran out (it died) stops counting; when it
comes back it writes its rows again from its own records before anything else.

Changes that must not interleave across hosts run in one transaction holding the volume's advisory
lock (with `lock_timeout`): exclusive for create, remove and purge and the top-folder restore,
shared for recording a mount (so a mount never lands on a volume being removed, and an image
copy's lend is never undone by another host's restore).

A database restart ends every lease at once while the hosts are still up; so for one lease after the
database started, every host counts as live: nothing is removed before the hosts have written
their mounts again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from fixeduser.postgres import database_label, libpq_conninfo
from fixeduser.state.cluster import CHANNEL, ClusterBusy, ClusterUnavailable, RemoteMount
from fixeduser.state.records import MountRecord, VolumeRecord

log = logging.getLogger(__name__)

_LOCK_SPACE = 0x6675  # the first key of every fixeduser advisory lock ("fu"); the second is hashtext(name)
_SCHEMA_LOCK = 0
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fixeduser_volumes (
        name TEXT PRIMARY KEY, record JSONB NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS fixeduser_hosts (
        host TEXT PRIMARY KEY, lease_until TIMESTAMPTZ NOT NULL, renewed_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fixeduser_mounts (
        host TEXT NOT NULL, volume TEXT NOT NULL, mount_id TEXT NOT NULL, identity TEXT NOT NULL,
        copy_up BOOLEAN NOT NULL, PRIMARY KEY (host, volume, mount_id))""",
    "CREATE INDEX IF NOT EXISTS fixeduser_mounts_by_volume ON fixeduser_mounts (volume)",
    f"""CREATE OR REPLACE FUNCTION fixeduser_volumes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('{CHANNEL}', TG_OP); RETURN NULL; END $$""",
    """CREATE OR REPLACE TRIGGER fixeduser_volumes_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fixeduser_volumes
    FOR EACH STATEMENT EXECUTE FUNCTION fixeduser_volumes_notify()""",
)
# A host counts while its lease runs, and during one lease length after the database (re)started.
_LIVE = "(h.lease_until > now() OR now() < pg_postmaster_start_time() + (h.lease_until - h.renewed_at))"
_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError)


class ClusterTx:
    """The statements of one locked transaction."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], host: str) -> None:
        self._conn = conn
        self._host = host

    async def volume(self, name: str) -> VolumeRecord | None:
        cursor = await self._conn.execute("SELECT record FROM fixeduser_volumes WHERE name = %s", (name,))
        row = await cursor.fetchone()
        return None if row is None else VolumeRecord.model_validate(row[0])

    async def put_volume(self, record: VolumeRecord) -> None:
        await self._conn.execute(
            "INSERT INTO fixeduser_volumes (name, record) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, updated_at = now()",
            (record.name, Jsonb(record.model_dump(mode="json"))),
        )

    async def delete_volume(self, name: str) -> None:
        await self._conn.execute("DELETE FROM fixeduser_volumes WHERE name = %s", (name,))
        await self._conn.execute("DELETE FROM fixeduser_mounts WHERE volume = %s", (name,))

    async def mounts_elsewhere(self, volume: str) -> list[RemoteMount]:
        """The mounts of `volume` held by other hosts that count (their lease runs)."""
        cursor = await self._conn.execute(
            "SELECT m.host, m.mount_id, m.identity, m.copy_up FROM fixeduser_mounts m "
            f"JOIN fixeduser_hosts h USING (host) WHERE m.volume = %s AND m.host <> %s AND {_LIVE} "
            "ORDER BY m.host, m.mount_id",
            (volume, self._host),
        )
        return [RemoteMount(*row) for row in await cursor.fetchall()]

    async def add_mount(self, record: MountRecord) -> None:
        await self._hold_host_row(share=True)
        await self._conn.execute(
            "INSERT INTO fixeduser_mounts VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (host, volume, mount_id) "
            "DO UPDATE SET identity = EXCLUDED.identity, copy_up = EXCLUDED.copy_up",
            (self._host, record.volume, record.mount_id, record.identity.key, record.copy_up),
        )

    async def remove_mount(self, mount_id: str, volume: str) -> None:
        await self._hold_host_row(share=True)
        await self._conn.execute(
            "DELETE FROM fixeduser_mounts WHERE host = %s AND volume = %s AND mount_id = %s",
            (self._host, volume, mount_id),
        )

    async def _hold_host_row(self, *, share: bool) -> None:
        """Row writes of this host wait for a rewrite of all its rows (`Cluster.renew`), and the other way round."""
        await self._conn.execute(
            f"SELECT 1 FROM fixeduser_hosts WHERE host = %s FOR {'SHARE' if share else 'UPDATE'}", (self._host,)
        )


class Cluster:
    """The shared database of one host's fixeduser: a small connection pool, the lease, the locks."""

    def __init__(
        self,
        url: str,
        host: str,
        *,
        lease: float = 15.0,
        lock_timeout: float = 10.0,
        connect_timeout: float = 3.0,
        max_connections: int = 4,
    ) -> None:
        self.url = url
        self.host = host
        self.lease = lease
        self.lock_timeout = lock_timeout
        self.label = database_label(url)
        self.available = False
        self.down_since: float | None = time.monotonic()
        self.last_error = "not connected yet"
        self._rewrite_rows = True  # this host's mount rows must be written again from its own records
        self._pool = AsyncConnectionPool(
            libpq_conninfo(url),
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=connect_timeout,
            # Give up a failed connection at once: the lease loop asks again every second while the database is
            # away, so it is reached within a second of its return (the pool's own backoff grows to minutes).
            reconnect_timeout=0,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            check=AsyncConnectionPool.check_connection,
            name="fixeduser-state",
        )

    # ------------------------------------------------------------------ connection

    async def open(self) -> bool:
        """Open the pool and make the schema; False (and logged) if the database cannot be reached now."""
        await self._pool.open(wait=False)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, _SCHEMA_LOCK))
                for statement in _SCHEMA:
                    await conn.execute(statement)
        except _DOWN as exc:
            self._went_down(exc)
            return False
        self._came_back()
        return True

    async def close(self) -> None:
        await self._pool.close()

    def _went_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {str(exc).strip() or 'no answer'}"
        self._rewrite_rows = True
        if self.available or self.down_since is None:
            log.warning("shared volume database unreachable", extra={"database": self.label, "error": self.last_error})
            self.down_since = time.monotonic()
        self.available = False

    def _came_back(self) -> None:
        if not self.available:
            log.info("shared volume database reachable", extra={"database": self.label})
        self.available = True
        self.down_since = None

    def unavailable(self, doing: str) -> ClusterUnavailable:
        return ClusterUnavailable(
            f"{doing} needs the shared volume database ({self.label}), which cannot be reached: {self.last_error}"
        )

    def note_unshared_change(self) -> None:
        """A mount or unmount was recorded on this host only: its rows are written again once the database answers."""
        self._rewrite_rows = True

    # ------------------------------------------------------------------ locked transactions

    @asynccontextmanager
    async def locked(
        self, name: str, *, exclusive: bool, doing: str, required: bool
    ) -> AsyncIterator[ClusterTx | None]:
        """A transaction holding `name`'s cluster-wide lock.

        `required`: without the database, raise `ClusterUnavailable` naming `doing`. Otherwise
        (mounts, unmounts) yield None and let the caller go on from this host's own records; a
        commit that fails after the caller finished is noted, and the rows are written again later.
        """
        if not self.available and not required:
            self._rewrite_rows = True
            yield None
            return
        entered = body_failed = False
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{round(self.lock_timeout * 1000)}ms'")
                kind = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
                await conn.execute(f"SELECT {kind}(%s, hashtext(%s))", (_LOCK_SPACE, name))
                entered = True
                try:
                    yield ClusterTx(conn, self.host)
                except BaseException:
                    body_failed = True
                    raise
        except pg_errors.LockNotAvailable:
            raise ClusterBusy(
                f"volume {name} is being changed on another host: its cluster-wide lock was not free within "
                f"{self.lock_timeout:g} s; try again"
            ) from None
        except _DOWN as exc:
            self._went_down(exc)
            if required or body_failed:
                raise self.unavailable(doing) from None
            if entered:
                return  # the caller finished; only the commit failed: its rows are written again later
        else:
            self._came_back()
            return
        yield None  # the database went away before the lock: the caller goes on with this host's records

    # ------------------------------------------------------------------ whole tables

    async def volumes(self) -> dict[str, VolumeRecord]:
        """Every volume record in the cluster."""
        rows = await self._read("SELECT name, record FROM fixeduser_volumes", (), doing="reading the volume list")
        return {name: VolumeRecord.model_validate(record) for name, record in rows}

    async def volume(self, name: str) -> VolumeRecord | None:
        rows = await self._read(
            "SELECT name, record FROM fixeduser_volumes WHERE name = %s", (name,), doing=f"reading volume {name}"
        )
        return VolumeRecord.model_validate(rows[0][1]) if rows else None

    async def _read(self, sql: str, params: tuple[Any, ...], *, doing: str) -> list[tuple[Any, ...]]:
        if not self.available:
            raise self.unavailable(doing)
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                rows = await cursor.fetchall()
        except _DOWN as exc:
            self._went_down(exc)
            raise self.unavailable(doing) from None
        self._came_back()
        return rows

    async def join(self, cached: Iterable[VolumeRecord]) -> list[str]:
        """On a host's first start in the cluster, bring the volumes it had on its own; a name the cluster
        already has stays the cluster's. Returns the names brought in. Raises `ClusterUnavailable` when the
        database cannot be reached (the host then starts from its cache and joins at a later start)."""
        if not self.available:
            raise self.unavailable("joining the cluster")
        brought: list[str] = []
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cursor = await conn.execute("SELECT 1 FROM fixeduser_hosts WHERE host = %s", (self.host,))
                if await cursor.fetchone() is not None:
                    return []
                for record in cached:
                    cursor = await conn.execute(
                        "INSERT INTO fixeduser_volumes (name, record) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                        (record.name, Jsonb(record.model_dump(mode="json"))),
                    )
                    if cursor.rowcount:
                        brought.append(record.name)
                await self._write_lease(conn)
        except _DOWN as exc:
            self._went_down(exc)
            raise self.unavailable("joining the cluster") from None
        return brought

    async def renew(self, mounts: Callable[[], list[MountRecord]]) -> None:
        """Renew this host's lease; after an outage (or at start) write all its mount rows again first."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._write_lease(conn)
                if self._rewrite_rows:
                    self._rewrite_rows = False  # a change noted from here on asks for another rewrite
                    await ClusterTx(conn, self.host)._hold_host_row(share=False)
                    await conn.execute("DELETE FROM fixeduser_mounts WHERE host = %s", (self.host,))
                    rows = [(self.host, m.volume, m.mount_id, m.identity.key, m.copy_up) for m in mounts()]
                    async with conn.cursor() as cursor:
                        await cursor.executemany("INSERT INTO fixeduser_mounts VALUES (%s, %s, %s, %s, %s)", rows)
        except _DOWN as exc:
            self._went_down(exc)
            raise self.unavailable("renewing this host's lease") from None
        self._came_back()

    async def _write_lease(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            "INSERT INTO fixeduser_hosts VALUES (%s, now() + make_interval(secs => %s), now()) "
            "ON CONFLICT (host) DO UPDATE SET lease_until = EXCLUDED.lease_until, renewed_at = EXCLUDED.renewed_at",
            (self.host, self.lease),
        )

    async def keep_leased(
        self, mounts: Callable[[], list[MountRecord]], on_back: Callable[[], Any], *, retry: float = 1.0
    ) -> None:
        """Renew the lease three times per lease length, and every `retry` seconds while the database is away;
        when it answers again, `on_back()` (catch up on the volume records)."""
        while True:
            was_available = self.available
            try:
                await self.renew(mounts)
            except ClusterUnavailable:
                pass  # logged once by `_went_down`; mounts go on from this host's records
            else:
                if not was_available:
                    result = on_back()
                    if asyncio.iscoroutine(result):
                        await result
            await asyncio.sleep(self.lease / 3 if self.available else retry)

    def status(self) -> dict[str, Any]:
        return {
            "database": self.label,
            "host": self.host,
            "available": self.available,
            "down_for_seconds": None if self.down_since is None else round(time.monotonic() - self.down_since, 1),
            "last_error": None if self.available else self.last_error,
            "lease_seconds": self.lease,
        }
