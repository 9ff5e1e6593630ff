from __future__ import annotations

import asyncio

import pytest

from fixeduser.handoff import GateBusy, MountGate
from fixeduser.identity import Identity

ALICE = Identity(uid=10001, gid=10000, user="10001", group="10000")
ALICE_BY_NAME = Identity(uid=10001, gid=10000, user="alice", group="eng")
BOB = Identity(uid=10002, gid=10000, user="10002", group="10000")


async def test_same_identity_claims_run_together() -> None:
    """Claims of one volume for the same identity (however spelled) do not wait for each other."""
    gate = MountGate()
    await gate.claim("a1", container="c1", owner="alice", volumes={"v": ALICE})
    await asyncio.wait_for(gate.claim("a2", container="c2", owner="alice", volumes={"v": ALICE_BY_NAME}), 0.5)
    assert {identity for _, identity in gate.claims_on("v")} == {ALICE}


async def test_other_identity_waits_until_release() -> None:
    """A claim for another identity waits until the volume is free, so a Mount never sees two identities."""
    gate = MountGate()
    await gate.claim("a", container="c1", owner="alice", volumes={"v": ALICE})
    waiting = asyncio.create_task(gate.claim("b", container="c2", owner="bob", volumes={"v": BOB}))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert [identity for _, identity in gate.claims_on("v")] == [ALICE]
    await gate.release("a")
    await asyncio.wait_for(waiting, 1)
    assert [identity for _, identity in gate.claims_on("v")] == [BOB]


async def test_other_volumes_are_independent() -> None:
    """Claims on different volumes never wait for each other."""
    gate = MountGate()
    await gate.claim("a", container="c1", owner="alice", volumes={"v1": ALICE})
    await asyncio.wait_for(gate.claim("b", container="c2", owner="bob", volumes={"v2": BOB}), 0.5)


async def test_lease_expiry_unblocks_a_waiter() -> None:
    """A claim whose AuthZRes never comes (failed request) expires, and the waiter proceeds."""
    gate = MountGate(lease_seconds=0.1, wait_seconds=2)
    await gate.claim("a", container="c1", owner="alice", volumes={"v": ALICE})
    await asyncio.wait_for(gate.claim("b", container="c2", owner="bob", volumes={"v": BOB}), 1)
    assert [identity for _, identity in gate.claims_on("v")] == [BOB]


async def test_waiting_too_long_is_an_error() -> None:
    """A claim that cannot be granted in time raises GateBusy naming the volume."""
    gate = MountGate(lease_seconds=10, wait_seconds=0.1)
    await gate.claim("a", container="c1", owner="alice", volumes={"v": ALICE})
    with pytest.raises(GateBusy, match="volume v"):
        await gate.claim("b", container="c2", owner="bob", volumes={"v": BOB})


async def test_permits_are_single_use_and_wildcards_are_not() -> None:
    """A create permit is consumed by one Create; a prune's wildcard permit lasts until revoked."""
    gate = MountGate()
    gate.grant("k", kind="create", volume="v", subject="alice", options={"mode": "0700"})
    permit = gate.take("create", "v")
    assert permit is not None and permit.subject == "alice" and permit.options == {"mode": "0700"}
    assert gate.take("create", "v") is None
    gate.grant("p", kind="remove", volume="*", subject="@local", options={})
    assert gate.take("remove", "x") is not None and gate.take("remove", "y") is not None
    gate.revoke("p")
    assert gate.take("remove", "x") is None
