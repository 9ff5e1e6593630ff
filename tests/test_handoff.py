from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from fixeduser.handoff import ClaimJournal, GateBusy, MountGate
from fixeduser.identity import Identity
from fixeduser.state import StateStore

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


def restarted_gate(path: Path, **kwargs: float) -> tuple[MountGate, StateStore]:
    """What a (re)started plugin builds: a gate over the state file, with the claims it finds there."""
    store = StateStore(path)
    gate = MountGate(journal=ClaimJournal(store), **kwargs)
    gate.restore()
    return gate, store


async def test_a_claim_outlives_a_crash_until_its_release(tmp_path: Path) -> None:
    """A claim is committed before `claim` returns: a plugin started after a crash still holds it, so a
    Mount retried by the daemon finds its container, and other identities keep waiting until its AuthZRes."""
    before, _ = restarted_gate(tmp_path / "state.db")  # left unclosed: a crash
    await before.claim("k", container="c1", owner="alice", volumes={"v": ALICE})

    after, store = restarted_gate(tmp_path / "state.db", wait_seconds=0.1)
    assert [(claim.container, identity) for claim, identity in after.claims_on("v")] == [("c1", ALICE)]
    with pytest.raises(GateBusy):
        await after.claim("b", container="c2", owner="bob", volumes={"v": BOB})
    await after.release("k")  # the request's AuthZRes, retried to the new process
    assert after.claims_on("v") == []
    store.close()

    again, store = restarted_gate(tmp_path / "state.db")
    assert again.claims_on("v") == []
    store.close()


async def test_a_restored_claim_keeps_only_what_was_left_of_its_lease(tmp_path: Path) -> None:
    before, first = restarted_gate(tmp_path / "state.db", lease_seconds=0.2)
    await before.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    first.close()
    await asyncio.sleep(0.3)
    after, store = restarted_gate(tmp_path / "state.db")
    assert after.claims_on("v") == []
    assert store.query("SELECT COUNT(*) FROM claims") == [(0,)]  # the ended row is gone too
    store.close()


async def test_a_claim_that_cannot_be_recorded_is_refused_and_not_held(tmp_path: Path) -> None:
    gate, store = restarted_gate(tmp_path / "state.db", wait_seconds=0.1)
    store.execute("DROP TABLE claims")
    with pytest.raises(GateBusy, match=r"cannot record the claim of volume\(s\) v"):
        await gate.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    assert gate.claims_on("v") == []
    store.close()


def test_an_unreadable_saved_claim_is_dropped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path / "state.db")
    store.execute("INSERT INTO claims VALUES ('x', '{\"key\": 1}')")
    store.close()
    with caplog.at_level(logging.ERROR):
        gate, store = restarted_gate(tmp_path / "state.db")
    assert gate.claims_on("v") == []
    assert "unreadable saved claim" in caplog.text
    assert store.query("SELECT COUNT(*) FROM claims") == [(0,)]
    store.close()
