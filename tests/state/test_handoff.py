from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from fixeduser.policy.identity import Identity
from fixeduser.state.handoff import ClaimJournal, GateBusy, MountGate

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


def restarted_gate(path: Path, **kwargs: float) -> MountGate:
    """What a (re)started plugin builds: a gate with the claims its journal file holds."""
    gate = MountGate(journal=ClaimJournal(path), **kwargs)
    gate.restore()
    return gate


def journal_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_a_claim_outlives_a_crash_until_its_release(tmp_path: Path) -> None:
    """A claim is written before `claim` returns: a plugin started after a crash still holds it, so a
    Mount retried by the daemon finds its container, and other identities keep waiting until its AuthZRes."""
    journal = tmp_path / "claims.jsonl"
    before = restarted_gate(journal)
    await before.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    await before.claim("other", container="c9", owner="bob", volumes={"w": BOB})
    await before.release("other")  # its end is journaled too
    # the process dies here

    after = restarted_gate(journal, wait_seconds=0.1)
    assert [(claim.container, identity) for claim, identity in after.claims_on("v")] == [("c1", ALICE)]
    assert after.claims_on("w") == []
    assert len(journal_lines(journal)) == 1  # rewritten with the live claim only
    with pytest.raises(GateBusy):
        await after.claim("b", container="c2", owner="bob", volumes={"v": BOB})
    await after.release("k")  # the request's AuthZRes, retried to the new process
    assert after.claims_on("v") == []

    assert restarted_gate(journal).claims_on("v") == []


async def test_a_restored_claim_keeps_only_what_was_left_of_its_lease(tmp_path: Path) -> None:
    journal = tmp_path / "claims.jsonl"
    before = restarted_gate(journal, lease_seconds=0.2)
    await before.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    await asyncio.sleep(0.1)
    after = restarted_gate(journal, wait_seconds=2)
    ((claim, _),) = after.claims_on("v")
    assert claim.expires - time.monotonic() < 0.11
    started = time.monotonic()
    await after.claim("b", container="c2", owner="bob", volumes={"v": BOB})  # waits out the rest of the lease
    assert time.monotonic() - started < 1
    assert [claim.key for claim, _ in restarted_gate(journal).claims_on("v")] == ["b"]  # the ended one is gone


async def test_a_claim_that_cannot_be_recorded_is_refused_and_not_held(tmp_path: Path) -> None:
    gate = MountGate(journal=ClaimJournal(tmp_path / "missing" / "claims.jsonl"))
    with pytest.raises(GateBusy, match=r"cannot record the claim of volume\(s\) v: .*No such file"):
        await gate.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    assert gate.claims_on("v") == []


async def test_a_torn_or_unreadable_journal_line_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "claims.jsonl"
    before = restarted_gate(journal)
    await before.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    with journal.open("a") as handle:
        handle.write('{"key": 1}\n{"id": "torn by a cra')
    with caplog.at_level(logging.WARNING):
        after = restarted_gate(journal)
    assert [claim.container for claim, _ in after.claims_on("v")] == ["c1"]
    assert caplog.text.count("unreadable claim journal line") == 2


async def test_the_journal_is_emptied_or_compacted_once_it_grows(tmp_path: Path) -> None:
    """Past its first limit the file is emptied when no claim is live; under a load that always has some,
    past its second it keeps only the live ones. Either way a restart finds exactly the live claims."""
    journal_file = tmp_path / "claims.jsonl"
    journal = ClaimJournal(journal_file)
    journal.EMPTY_AT, journal.COMPACT_AT = 2048, 8192
    gate = MountGate(journal=journal)

    async def claim_and_release(count: int) -> None:
        for i in range(count):
            await gate.claim(f"k{i}", container=f"c{i}", owner="alice", volumes={"v": ALICE})
            await gate.release(f"k{i}")

    await claim_and_release(100)
    assert journal_file.stat().st_size < 2048 + 512
    assert restarted_gate(journal_file).claims_on("v") == []
    await gate.claim("steady", container="c0", owner="alice", volumes={"v": ALICE})
    await claim_and_release(200)
    assert 0 < journal_file.stat().st_size < 8192 + 512
    assert [claim.key for claim, _ in restarted_gate(journal_file).claims_on("v")] == ["steady"]


async def test_a_torn_write_refuses_the_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that stores only part of the line (a full disk) saves nothing: the claim is refused."""
    gate = MountGate(journal=ClaimJournal(tmp_path / "claims.jsonl"))
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(GateBusy, match="wrote 10 of"):
        await gate.claim("k", container="c1", owner="alice", volumes={"v": ALICE})
    assert gate.claims_on("v") == []


def test_a_restored_claim_never_outlasts_a_lease(tmp_path: Path) -> None:
    """Remaining time comes from the wall clock, which may have jumped back: it is capped at one lease."""
    journal = tmp_path / "claims.jsonl"
    line = {"id": "x.1", "key": "k", "container": "c1", "owner": "alice", "for_create": False,
            "volumes": {"v": ALICE.model_dump()}, "expires_at": time.time() + 3600}  # fmt: skip
    journal.write_text(json.dumps(line) + "\n")
    ((claim, _),) = restarted_gate(journal, lease_seconds=30).claims_on("v")
    assert claim.expires - time.monotonic() <= 30
