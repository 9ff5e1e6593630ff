"""The start that follows a create (`docker run` starts by the full ID) uses the daemon's description of the
container asked for as soon as the create was answered, instead of waiting for a look-up of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fixeduser.authz.facts import EarlyDescriptions
from fixeduser.docker_api.daemon import DaemonError

from .conftest import DRIVER, Harness

A_ID = "a" * 64
BODY = {"Image": "busybox", "HostConfig": {"NetworkMode": "none"}}


def counted_lookups(harness: Harness, monkeypatch: pytest.MonkeyPatch, *, fail_first: bool = False) -> list[str]:
    asked: list[str] = []
    inspect = harness.known.inspect_container

    async def counting(reference: str) -> dict[str, Any] | None:
        asked.append(reference)
        if fail_first and len(asked) == 1:
            raise DaemonError("the daemon did not answer")
        return await inspect(reference)

    monkeypatch.setattr(harness.known, "inspect_container", counting)
    return asked


async def created(harness: Harness, cid: str = A_ID, name: str = "web", body: dict[str, Any] = BODY) -> None:
    """A create as the daemon drives it: the container exists when its AuthZRes is asked."""
    uri = f"/v1.41/containers/create?name={name}"
    assert (await harness.ask("POST", uri, body=body)).allow
    harness.known.add(cid, name, body, set(harness.registry.names()))
    assert (await harness.respond("POST", uri, body=body, status=201, response={"Id": cid})).allow
    await asyncio.sleep(0)  # the early look-up runs


async def start(harness: Harness, cid: str = A_ID) -> bool:
    return (await harness.ask("POST", f"/v1.41/containers/{cid}/start")).allow


async def test_the_start_after_a_create_uses_the_description_asked_for_at_the_create(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = counted_lookups(harness, monkeypatch)
    await created(harness)
    assert asked == [A_ID]
    assert await start(harness)
    assert asked == [A_ID]
    assert await start(harness)  # one use each: a later start asks the daemon again
    assert asked == [A_ID, A_ID]


async def test_the_early_description_still_carries_the_containers_volumes(harness: Harness) -> None:
    """The start claims the fixeduser volumes the early description names, as a look-up would have."""
    await harness.add_volume("eng-data")
    body = {**BODY, "HostConfig": {"NetworkMode": "none", "Binds": ["eng-data:/data"], "VolumeDriver": DRIVER}}
    await created(harness, body=body)
    assert await start(harness)
    gate = harness.authorizer._volumes.gate
    assert [claim.container for claim, _ in gate.claims_on("eng-data")] == [A_ID]


async def test_a_stale_or_failed_early_look_up_is_asked_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = counted_lookups(harness, monkeypatch, fail_first=True)
    await created(harness)
    assert await start(harness)
    assert asked == [A_ID, A_ID]
    harness.authorizer._containers.facts.early = EarlyDescriptions(seconds=0.0)
    await created(harness, cid="b" * 64, name="other")
    assert await start(harness, "b" * 64)
    assert asked == [A_ID, A_ID, "b" * 64, "b" * 64]


async def test_early_descriptions_are_bounded_and_must_name_the_container(harness: Harness) -> None:
    early = EarlyDescriptions(kept=2)
    harness.known.add(A_ID, "a", BODY, set())
    harness.known.add("b" * 64, "b", BODY, set())
    harness.known.add("c" * 64, "c", BODY, set())
    for cid in (A_ID, "b" * 64, "c" * 64):
        early.ask(cid, harness.known)
    assert await early.take(A_ID) is None  # the oldest made room
    described = await early.take("b" * 64)
    assert described is not None and described["Id"] == "b" * 64
    assert await early.take("b" * 64) is None  # used up
    harness.known.described["c" * 64]["Id"] = "d" * 64  # an answer about another container is not used
    assert await early.take("c" * 64) is None
