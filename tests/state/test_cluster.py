"""The shared volume state on a real PostgreSQL: records every host sees within a second, "in use" that counts
only live hosts, cluster-wide locks with a timeout, and a database outage that stops creates and removes but
not mounts."""

from __future__ import annotations

import asyncio
import secrets
import time
import types
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixeduser.policy.identity import Identity
from fixeduser.postgres import listen
from fixeduser.state.cluster import CHANNEL, ClusterBusy, ClusterUnavailable, RemoteMount
from fixeduser.state.cluster_database import Cluster
from fixeduser.state.records import VolumeRecord, new_mount_record, now_rfc3339
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.store import StateStore
from tests.policy.postgres import Postgres
from tests.waiting import until

ALICE = Identity(uid=10001, gid=10000, user="alice", group="eng")


def record(name: str, creator: str = "alice", pinned: Identity | None = None) -> VolumeRecord:
    return VolumeRecord(
        name=name, creator=creator, owner=pinned or ALICE, pinned=pinned, mode=0o770, purge=False,
        created_at=now_rfc3339(), options={},
    )  # fmt: skip


@dataclass
class Host:
    """One host's view of the cluster: its own SQLite state, its own connection pool and lease."""

    name: str
    store: StateStore
    cluster: Cluster
    registry: VolumeRegistry

    async def create(self, volume: VolumeRecord) -> None:
        async with self.registry.changing(volume.name, doing=f"creating volume {volume.name}"):
            await self.registry.add(volume)


@pytest.fixture
def database(postgres: Postgres) -> str:
    return postgres.create_database(f"t{secrets.token_hex(4)}")


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[Callable[..., asyncio.Future[Host]]]:
    made: list[Host] = []

    async def make(name: str, url: str, **options: float) -> Host:
        store = StateStore(tmp_path / name / "state.db")
        cluster = Cluster(url, name, **options)  # type: ignore[arg-type]
        await cluster.open()
        host = Host(name, store, cluster, VolumeRegistry(store, cluster))
        made.append(host)
        return host

    yield make  # type: ignore[misc]
    for host in made:
        await host.cluster.close()
        host.store.close()


async def test_a_volume_made_on_one_host_reaches_the_other_within_a_second(database: str, make_host) -> None:  # type: ignore[no-untyped-def]
    """A create on A is listed by B (through LISTEN/NOTIFY) within a second; so is its removal."""
    a, b = await make_host("host-a", database), await make_host("host-b", database)
    ready = asyncio.Event()
    listener = asyncio.create_task(listen(database, CHANNEL, lambda _: b.registry.refresh(), ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        started = time.monotonic()
        await a.create(record("eng-shared", pinned=ALICE))
        await until(lambda: "eng-shared" in b.registry, "B to list the volume A created", within=1.0)
        print(f"created on A, listed on B after {time.monotonic() - started:.3f} s")
        assert b.registry.get("eng-shared") == a.registry.get("eng-shared")
        assert b.registry.get("eng-shared").pinned == ALICE  # type: ignore[union-attr]
        async with a.registry.changing("eng-shared", doing="removing"):
            await a.registry.remove("eng-shared")
        await until(lambda: "eng-shared" not in b.registry, "B to drop the volume A removed", within=1.0)
    finally:
        listener.cancel()
    # B's cache follows the database: a restarted B knows the volume list without asking.
    assert b.store.query("SELECT name FROM volumes") == []


async def test_a_second_create_of_a_name_reads_the_first_hosts_record(database: str, make_host) -> None:  # type: ignore[no-untyped-def]
    """Entering a change reads the shared record first: B sees A's volume (creator, pin) before deciding."""
    a, b = await make_host("host-a", database), await make_host("host-b", database)
    await a.create(record("eng-v", creator="alice", pinned=ALICE))
    assert "eng-v" not in b.registry  # B did not listen: its cache does not have it yet
    async with b.registry.changing("eng-v", doing="creating volume eng-v"):
        assert b.registry.get("eng-v") == a.registry.get("eng-v")


async def test_in_use_counts_the_mounts_of_hosts_whose_lease_runs(database: str, make_host) -> None:  # type: ignore[no-untyped-def]
    """A's mount is seen by B while A's lease runs; once it ran out (A died), it no longer counts; A's next renewal
    writes its rows again."""
    a = await make_host("host-a", database, lease=1.5)
    b = await make_host("host-b", database)
    await a.create(record("eng-v"))
    await a.cluster.renew(a.registry.all_mounts)
    async with a.registry.using("eng-v", doing="mounting"):
        await a.registry.add_mount(new_mount_record("m1", "eng-v", ALICE, copy_up=True))
    async with b.registry.changing("eng-v", doing="removing"):
        assert await b.registry.mounts_elsewhere("eng-v") == [
            RemoteMount(host="host-a", mount_id="m1", identity=ALICE.key, copy_up=True)
        ]
    await asyncio.sleep(1.7)
    async with b.registry.changing("eng-v", doing="removing"):
        assert await b.registry.mounts_elsewhere("eng-v") == []  # A's lease ran out
    a.cluster.note_unshared_change()
    await a.cluster.renew(a.registry.all_mounts)
    async with b.registry.changing("eng-v", doing="removing"):
        assert [m.mount_id for m in await b.registry.mounts_elsewhere("eng-v")] == ["m1"]
    async with a.registry.using("eng-v", exclusive=True, doing="unmounting"):
        await a.registry.remove_mount("m1", "eng-v")
    async with b.registry.changing("eng-v", doing="removing"):
        assert await b.registry.mounts_elsewhere("eng-v") == []


async def test_a_volume_held_on_one_host_times_out_the_others_with_a_clear_error(database: str, make_host) -> None:  # type: ignore[no-untyped-def]
    """While A changes eng-v, B's change waits at most its lock timeout and then says why; shared holds
    (mounts) do not wait for each other, and a different volume is not held at all."""
    a = await make_host("host-a", database)
    b = await make_host("host-b", database, lock_timeout=0.3)
    await a.create(record("eng-v"))
    async with a.registry.changing("eng-v", doing="removing"):
        started = time.monotonic()
        with pytest.raises(ClusterBusy, match=r"eng-v is being changed on another host.*0\.3 s"):
            async with b.registry.using("eng-v", doing="mounting"):
                pass
        assert 0.25 < time.monotonic() - started < 3
        async with b.registry.changing("eng-other", doing="creating"):
            pass
    async with a.registry.using("eng-v", doing="mounting"), b.registry.using("eng-v", doing="mounting"):
        pass


async def test_a_failed_change_leaves_every_host_as_it_was(database: str, make_host) -> None:  # type: ignore[no-untyped-def]
    """A change that fails before its commit changes neither the database nor this host's memory or cache."""
    a, b = await make_host("host-a", database), await make_host("host-b", database)
    with pytest.raises(RuntimeError, match="backend failed"):
        async with a.registry.changing("eng-v", doing="creating"):
            await a.registry.add(record("eng-v"))
            raise RuntimeError("backend failed")
    assert "eng-v" not in a.registry
    assert await b.registry.refresh() == 0 and "eng-v" not in b.registry


async def test_a_host_brings_its_volumes_when_it_first_joins(database: str, make_host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A single host that starts using the database brings its volumes; a name the cluster has stays the cluster's;
    a host that was in the cluster before never brings back what was removed meanwhile."""
    a = await make_host("host-a", database)
    await a.create(record("eng-taken", creator="alice"))
    single = StateStore(tmp_path / "host-b" / "state.db")
    for volume in (record("eng-mine", creator="bob"), record("eng-taken", creator="bob")):
        single.execute("INSERT INTO volumes VALUES (?, ?)", (volume.name, volume.model_dump_json()))
    single.close()
    b = await make_host("host-b", database)
    cached = [r for n in b.registry.names() if (r := b.registry.get(n)) is not None]
    assert await b.cluster.join(cached) == ["eng-mine"]
    await b.registry.refresh()
    assert b.registry.get("eng-taken").creator == "alice"  # type: ignore[union-attr]
    async with a.registry.changing("eng-mine", doing="removing"):
        await a.registry.remove("eng-mine")
    assert await b.cluster.join(cached) == []  # known to the cluster now: its cache is not the truth


async def test_a_database_outage_stops_changes_but_not_mounts(own_postgres: Postgres, make_host) -> None:  # type: ignore[no-untyped-def]
    """Database away: a create fails naming the database and the reason; a mount is recorded on this host alone,
    without waiting. Back: for one lease after the database started every host counts (A's lease ran out during
    the outage, yet its mount still holds the volume), and A's next renewal writes all its rows again."""
    url = own_postgres.url
    a = await make_host("host-a", url, lease=4.0, connect_timeout=1.0)
    b = await make_host("host-b", url, lease=4.0, connect_timeout=1.0)
    await a.create(record("eng-v"))
    await a.cluster.renew(a.registry.all_mounts)
    async with a.registry.using("eng-v", doing="mounting"):
        await a.registry.add_mount(new_mount_record("m-before", "eng-v", ALICE))
    own_postgres.halt()
    with pytest.raises(ClusterUnavailable, match=r"creating volume eng-new needs the shared volume database .*/"):
        async with a.registry.changing("eng-new", doing="creating volume eng-new"):
            pass
    assert not a.cluster.available
    with pytest.raises(ClusterUnavailable, match="joining the cluster needs the shared volume database"):
        await a.cluster.join([])  # a plugin starting now goes on from its cache, it does not fail
    started = time.monotonic()
    async with a.registry.using("eng-v", doing="mounting"):  # no waiting: the database is known to be away
        await a.registry.add_mount(new_mount_record("m-away", "eng-v", ALICE))
    assert time.monotonic() - started < 0.5
    assert sorted(m.mount_id for m in a.registry.mounts_of("eng-v")) == ["m-away", "m-before"]
    assert a.registry.get("eng-v") is not None  # known volumes stay known
    await asyncio.sleep(4.2)  # longer than A's lease
    own_postgres.resume()
    await _renewed(b)  # B is back; A has not renewed yet
    async with b.registry.changing("eng-v", doing="removing"):
        assert [m.mount_id for m in await b.registry.mounts_elsewhere("eng-v")] == ["m-before"]
    took = await _renewed(a)
    assert took < 3, f"A reached the database {took:.1f} s after it was back"
    async with b.registry.changing("eng-v", doing="removing"):
        assert sorted(m.mount_id for m in await b.registry.mounts_elsewhere("eng-v")) == ["m-away", "m-before"]


async def _renewed(host: Host) -> float:
    """Renew as the lease loop does while the database is away (every second) until it works; returns how long."""
    started = time.monotonic()
    for _ in range(10):
        try:
            await host.cluster.renew(host.registry.all_mounts)
            return time.monotonic() - started
        except ClusterUnavailable:
            await asyncio.sleep(1.0)
    raise AssertionError(f"{host.name} did not reach the database again within 10 tries")


async def test_a_record_is_read_in_a_task_of_its_own_when_its_caller_has_none(database: str, make_host) -> None:  # type: ignore[no-untyped-def]
    """Decisions and volume `Get`s start where the daemon's call arrives, outside any task (plugin.http), and the
    database pool bounds its waits with timeouts, which need a task from Python 3.12 on: the read gets its own."""
    a, b = await make_host("host-a", database), await make_host("host-b", database)
    await a.create(record("eng-late", pinned=ALICE))
    tasks_reading: list[asyncio.Task[object] | None] = []
    read = b.cluster.volume

    async def noting_its_task(name: str) -> VolumeRecord | None:
        tasks_reading.append(asyncio.current_task())
        return await read(name)

    b.cluster.volume = noting_its_task
    refresh = b.registry.refresh_one("eng-late")
    loop = asyncio.get_running_loop()
    first: asyncio.Future[object] = loop.create_future()
    loop.call_soon(lambda: first.set_result(refresh.send(None)))  # its first step in a callback, as plugin.http runs it
    waited_on = await first

    @types.coroutine
    def the_rest() -> Generator[object, None, VolumeRecord | None]:
        """What the refresh waits on goes up to this test's task, and each step after it is done runs here."""
        awaited = waited_on
        while True:
            yield awaited
            try:
                awaited = refresh.send(None)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    found = await the_rest()
    assert len(tasks_reading) == 1 and tasks_reading[0] is not None
    assert found == a.registry.get("eng-late") and b.registry.get("eng-late") == found
