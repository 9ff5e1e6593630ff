"""Which mount records are more than the running containers can hold (after a crash lost Unmounts).

A mount record names the containers its Mount *may* be for (every container with a live claim on
the volume at that moment), so after a crash two records can name one running container: its own
and, say, the create-time copy mount whose Unmount was lost. Each record is evidence for a mount
point only if some running container's mount point of the volume can be assigned to it, one record
per mount point. A maximum matching of records to mount points keeps as many records as the
running containers can explain; the rest are surplus.

Preferences, so the record kept is the likeliest real one and later Unmounts find their record:
a record naming the container by ID (a start's) before one naming it by name (a create's) before
one naming no container; then the most specific and newest. A record whose identity differs from
the identity the container is expected to mount as is only matched through the container's ID (a
reused name or an unnamed create says nothing about whose mount it was).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fixeduser.policy.identity import Identity
from fixeduser.state.records import MountRecord

BY_ID, BY_NAME, UNNAMED = 0, 1, 2


@dataclass(frozen=True)
class VolumeUse:
    """A live container's use of one volume, as the daemon lists it."""

    id: str
    names: frozenset[str]
    mount_points: int  # how many of its mount points use the volume
    expected: Identity | None  # whose identity it should mount as (None: not known here)


def surplus_records(records: Sequence[MountRecord], users: Iterable[VolumeUse]) -> list[MountRecord]:
    """The records no mount point of a live container can be assigned to (all records are one volume's)."""
    slots = [user for user in users for _ in range(user.mount_points)]
    edges = {record.mount_id: _ranked_slots(record, slots) for record in records}
    holder: dict[int, str] = {}  # slot index -> mount_id of the record assigned to it
    for record in sorted(records, key=lambda r: _preference(r, edges[r.mount_id])):
        _assign(record.mount_id, edges, holder)
    kept = set(holder.values())
    return [record for record in records if record.mount_id not in kept]


def _preference(record: MountRecord, ranked: list[tuple[int, int]]) -> tuple[int, int, bool, float]:
    """Best first: the strongest tie to a live container, then the fewest containers named (a start
    mount names its own; a mount during a create also names the containers of other live claims),
    then not made during a create, then the newest."""
    best_rank = ranked[0][0] if ranked else UNNAMED + 1
    return best_rank, len(record.containers), record.copy_up, -record.mounted_at


def _ranked_slots(record: MountRecord, slots: Sequence[VolumeUse]) -> list[tuple[int, int]]:
    """(rank, slot index) for each mount point `record` may stand for, best rank first."""
    ranked = []
    for index, user in enumerate(slots):
        rank = _rank(record, user)
        if rank is not None:
            ranked.append((rank, index))
    return sorted(ranked)


def _rank(record: MountRecord, user: VolumeUse) -> int | None:
    if user.id in record.containers:
        return BY_ID
    same_identity = user.expected is None or user.expected == record.identity
    if not same_identity:
        return None
    if not record.containers:
        return UNNAMED
    if user.names.intersection(record.containers):
        return BY_NAME
    return None


def _assign(mount_id: str, edges: dict[str, list[tuple[int, int]]], holder: dict[int, str]) -> None:
    """Give `mount_id` a slot along an augmenting path (breadth first, no recursion), if there is one.

    Records assigned earlier stay assigned (possibly moved to another slot): that is what makes
    the order in which records are assigned a preference."""
    came_from: dict[int, tuple[str, int | None]] = {}  # slot -> (record that reached it, that record's slot)
    frontier: list[tuple[str, int | None]] = [(mount_id, None)]
    while frontier:
        reached: list[tuple[str, int | None]] = []
        for record, own_slot in frontier:
            for _, slot in edges[record]:
                if slot in came_from:
                    continue
                came_from[slot] = (record, own_slot)
                if slot not in holder:
                    _augment(slot, came_from, holder)
                    return
                reached.append((holder[slot], slot))
        frontier = reached


def _augment(free: int, came_from: dict[int, tuple[str, int | None]], holder: dict[int, str]) -> None:
    slot: int | None = free
    while slot is not None:
        record, previous = came_from[slot]
        holder[slot] = record
        slot = previous
