"""Which mount records outnumber what the live containers can hold (the crash case of issue 5)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from fixeduser.policy.identity import Identity
from fixeduser.state.records import MountRecord
from fixeduser.volumes.surplus import VolumeUse, surplus_records

ALICE = Identity(uid=10001, gid=10000, user="alice", group="eng")
BOB = Identity(uid=10002, gid=10000, user="bob", group="eng")
ID_A, ID_B = "a" * 64, "b" * 64


def record(mount_id: str, identity: Identity, *containers: str, at: float = 1.0) -> MountRecord:
    return MountRecord(
        mount_id=mount_id, volume="v", identity=identity, containers=tuple(sorted(containers)), mounted_at=at
    )


def use(cid: str, name: str, identity: Identity | None, mount_points: int = 1) -> VolumeUse:
    return VolumeUse(id=cid, names=frozenset({name}), mount_points=mount_points, expected=identity)


def dropped(records: list[MountRecord], users: list[VolumeUse]) -> list[str]:
    return sorted(r.mount_id for r in surplus_records(records, users))


def test_the_lost_copy_mount_of_a_crash_is_surplus_and_the_start_mount_stays() -> None:
    """The burst case: a start mount (by ID) and the create-time copy mount whose Unmount was lost both name the
    running container; the copy mount goes, whichever is newer."""
    start = record("start", ALICE, ID_A, at=2.0)
    copy = record("copy", ALICE, "alice-1", ID_B, at=3.0)  # named by name, and another start was in flight
    other = record("other", ALICE, ID_B, at=1.0)
    users = [use(ID_A, "alice-1", ALICE), use(ID_B, "alice-2", ALICE)]
    assert dropped([start, copy, other], users) == ["copy"]


def test_records_are_kept_up_to_the_mount_points_of_live_containers() -> None:
    twice = use(ID_A, "c", ALICE, mount_points=2)  # one volume at two mount points of one container
    records = [record(f"m{i}", ALICE, ID_A, at=float(i)) for i in range(3)]
    assert dropped(records, [twice]) == ["m0"]  # the oldest
    assert dropped(records, []) == ["m0", "m1", "m2"]


def test_a_reused_name_or_unnamed_create_never_keeps_another_identitys_record() -> None:
    """Bob's old record by the name `db` cannot stand for alice's new `db`; alice's record by ID can."""
    bobs = record("bobs", BOB, "db", at=5.0)
    unnamed = record("unnamed", BOB, at=6.0)
    alices = record("alices", ALICE, ID_A, at=1.0)
    assert dropped([bobs, unnamed, alices], [use(ID_A, "db", ALICE)]) == ["bobs", "unnamed"]
    # Not knowing whose the container is, a name or an unnamed record may stand for it.
    assert dropped([bobs], [use(ID_A, "db", None)]) == []
    assert dropped([unnamed], [use(ID_A, "db", None)]) == []


def test_an_earlier_record_is_moved_rather_than_dropped_to_make_room() -> None:
    """The ID record (assigned first) may hold either slot; moving it lets the name record keep the other."""
    by_id = record("by-id", ALICE, ID_A, ID_B, at=1.0)
    by_name = record("by-name", ALICE, "first", at=2.0)
    users = [use(ID_A, "first", ALICE), use(ID_B, "second", ALICE)]
    assert dropped([by_id, by_name], users) == []


CONTAINERS = [(ID_A, "alice-1", ALICE), (ID_B, "bob-1", BOB), ("c" * 64, "alice-2", ALICE)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[MountRecord], list[VolumeUse]]:
    users = [
        use(cid, name, draw(st.sampled_from([identity, None])), draw(st.integers(1, 2)))
        for cid, name, identity in CONTAINERS
        if draw(st.booleans())
    ]
    refs = [ref for cid, name, _ in CONTAINERS for ref in (cid, name)] + ["gone", "d" * 64]
    records = [
        record(
            f"m{i}",
            draw(st.sampled_from([ALICE, BOB])),
            *draw(st.sets(st.sampled_from(refs), max_size=3)),
            at=draw(st.floats(0, 10)),
        )
        for i in range(draw(st.integers(0, 8)))
    ]
    return records, users


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_live_mount_point_that_some_record_can_stand_for_keeps_one(
    scenario: tuple[list[MountRecord], list[VolumeUse]],
) -> None:
    """Checked against a brute force: the kept records are as many as a maximum assignment allows, and each kept
    record can stand for a distinct live mount point; only unassignable records go."""
    records, users = scenario
    kept = [r for r in records if r not in surplus_records(records, users)]
    slots = [u for u in users for _ in range(u.mount_points)]
    assert len(kept) == _max_assignment(records, slots)
    assert _max_assignment(kept, slots) == len(kept)
    per_container = Counter(u.id for u in slots)
    by_id = Counter(r.containers[0] for r in kept if len(r.containers) == 1 and r.containers[0] in per_container)
    assert all(by_id[cid] <= n for cid, n in per_container.items())


def _max_assignment(records: list[MountRecord], slots: list[VolumeUse]) -> int:
    """The size of a maximum assignment of records to slots, by exhaustive search (tiny inputs only)."""

    def fits(r: MountRecord, u: VolumeUse) -> bool:
        if u.id in r.containers:
            return True
        if u.expected is not None and u.expected != r.identity:
            return False
        return not r.containers or bool(u.names & set(r.containers))

    def best(i: int, free: frozenset[int]) -> int:
        if i == len(records):
            return 0
        options = [best(i + 1, free)]
        options += [1 + best(i + 1, free - {s}) for s in free if fits(records[i], slots[s])]
        return max(options)

    return best(0, frozenset(range(len(slots))))
