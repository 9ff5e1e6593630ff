"""`docker inspect NAME` of one's own container needs no daemon look-up: the daemon's answer, withheld until
the AuthZRes allows it, says which container it was, and is checked then."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from fixeduser.authz.facts import RecentNames, answered_id
from fixeduser.docker_api.daemon import SELF_HEADER

from .conftest import Harness

A_ID, B_ID = "a" * 64, "b" * 64
INSPECT = "/v1.41/containers/{}/json"


def counted_lookups(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []
    inspect = harness.known.inspect_container

    async def counting(reference: str) -> dict[str, Any] | None:
        asked.append(reference)
        return await inspect(reference)

    monkeypatch.setattr(harness.known, "inspect_container", counting)
    return asked


def inspect_answer(cid: str, name: str) -> dict[str, Any]:
    """The daemon's answer, in its own key order: the ID first."""
    return {"Id": cid, "Created": "2024-01-01T00:00:00Z", "Name": f"/{name}", "Config": {"Env": ["SECRET=x"]}}


async def test_own_container_by_name_is_inspected_without_a_look_up(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.create_container("alice", "mine", A_ID)
    asked = counted_lookups(harness, monkeypatch)
    uri = INSPECT.format("mine")
    verdict = await harness.ask("GET", uri)
    assert verdict.allow and verdict.message == "allowed" and verdict.rule is not None
    assert (await harness.respond("GET", uri, status=200, response=inspect_answer(A_ID, "mine"))).allow
    assert asked == []


async def test_a_name_now_meaning_anothers_container_is_denied_with_the_answer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guess was stale (the name changed hands without the plugin seeing it): the answer is bob's
    container, so it is withheld, with the denial a look-up would have given at the request."""
    await harness.create_container("alice", "web", A_ID)
    await harness.create_container("bob", "bobs", B_ID)
    harness.known.described[B_ID]["Name"] = "/web"
    harness.remove_container(A_ID)
    uri = INSPECT.format("web")
    recent = harness.authorizer._containers.facts.recent
    recent.forget("web")
    looked_up = await harness.ask("GET", uri)  # without a guess: asked, bob's
    assert not looked_up.allow and "bob's container" in looked_up.message
    recent.learn("web", A_ID)  # the stale guess again
    asked = counted_lookups(harness, monkeypatch)
    assert (await harness.ask("GET", uri)).allow
    verdict = await harness.respond("GET", uri, status=200, response=inspect_answer(B_ID, "web"))
    assert not verdict.allow and verdict.message == looked_up.message, verdict.message
    assert asked == []
    assert harness.auditor.records[-1].phase == "response" and not harness.auditor.records[-1].allow


async def test_no_such_container_in_the_answer_is_denied_without_others(harness: Harness) -> None:
    await harness.create_container("alice", "gone", A_ID)
    uri = INSPECT.format("gone")
    assert (await harness.ask("GET", uri)).allow
    verdict = await harness.respond("GET", uri, status=404, response={"message": "No such container: gone"})
    assert not verdict.allow and "a container fixeduser has no owner for" in verdict.message


async def test_an_answer_without_the_body_asks_the_daemon(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 1 MiB (or not JSON) the daemon sends no body: which container it was is asked instead."""
    await harness.create_container("alice", "big", A_ID)
    await harness.create_container("bob", "bobs", B_ID)
    asked = counted_lookups(harness, monkeypatch)
    uri = INSPECT.format("big")
    request = harness.request("GET", uri, status=200)
    assert (await harness.authorizer.authorize_response(request)).allow
    assert asked == ["big"]
    harness.known.described[B_ID]["Name"] = "/big"
    harness.remove_container(A_ID)
    assert not (await harness.authorizer.authorize_response(request)).allow


async def test_answers_by_full_id_and_own_look_ups_are_not_checked_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.create_container("bob", "bobs", B_ID)
    asked = counted_lookups(harness, monkeypatch)
    own = {SELF_HEADER: harness.known.token}
    request = harness.request("GET", INSPECT.format("bobs"), user="", status=200, headers=own)
    request.response_body_b64 = base64.b64encode(json.dumps(inspect_answer(B_ID, "bobs")).encode()).decode()
    assert (await harness.authorizer.authorize_response(request)).allow
    by_id = await harness.respond("GET", INSPECT.format(B_ID), user="bob", status=404, response={"message": "x"})
    assert by_id.allow
    assert asked == []


async def test_others_grant_covers_the_answer(harness: Harness) -> None:
    await harness.create_container("bob", "bobs", B_ID)
    harness.authorizer._containers.facts.recent.learn("bobs", B_ID)
    uri = INSPECT.format("bobs")
    assert (await harness.ask("GET", uri, user="")).allow  # @local is an administrator
    assert (await harness.respond("GET", uri, user="", status=200, response=inspect_answer(B_ID, "bobs"))).allow


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps(inspect_answer(A_ID, "x"), separators=(",", ":")).encode(), A_ID),
        (json.dumps({"Name": "/x", "Id": A_ID}).encode(), A_ID),  # another key order: read as a whole
        (json.dumps({"Id": A_ID}).encode(), A_ID),
        (json.dumps({"Id": "a" * 12}).encode(), None),
        (json.dumps({"Id": A_ID.upper(), "Name": "/" + "x" * 80}).encode(), None),
        (b'{"message":"No such container: x"}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b"", None),
    ],
)
def test_answered_id(body: bytes, expected: str | None) -> None:
    assert answered_id(b64(body)) == expected


def test_answered_id_of_bad_base64() -> None:
    assert answered_id("!!!!" * 40) is None


def test_recent_names_are_bounded_and_forget_both_spellings() -> None:
    recent = RecentNames(size=2)
    recent.learn("a", A_ID)
    recent.learn("/b", B_ID)
    recent.learn("c", A_ID)
    assert recent.get("a") is None and recent.get("/b") == B_ID
    recent.forget("b")
    assert recent.get("/b") is None
    recent.learn("x" * 300, A_ID)
    assert recent.get("x" * 300) is None
