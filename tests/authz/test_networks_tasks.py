"""Network connect/disconnect ownership, swarm tasks by their service's creator, and the host network
named by ID or ID prefix, decided with look-ups at the session's real dockerd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixeduser.docker_api.daemon import DaemonClient, InspectedTask

from .conftest import Harness, make_harness

CREATE = "/v1.41/containers/create"
NETWORK_POLICY = "p, role:eng, api, network.*\n"
SWARM_POLICY = "p, role:eng, api, service.*\np, role:eng, api, task.*\n"
SERVICE_ID = "s" * 25
TASK_ID = "t" * 25


@pytest.fixture
def harness(real_harness: Harness) -> Harness:
    """These decisions ask a real daemon: about networks, swarm tasks and containers it made."""
    return real_harness


async def bobs_real_container(harness: Harness) -> str:
    """A real container on the daemon, recorded as bob's by its create response (ID only: no ?name)."""
    cid = harness.real.container()
    body = {"Image": harness.real.image, "HostConfig": {"NetworkMode": "none"}}
    verdict = await harness.respond("POST", CREATE, user="bob", body=body, status=201, response={"Id": cid})
    assert verdict.allow and harness.ledger.get(cid) is not None
    return cid


# ---- network connect / disconnect -------------------------------------------------------------


@pytest.mark.parametrize("action", ["connect", "disconnect"])
async def test_network_attach_of_others_container_denied(harness: Harness, tmp_path: Path, action: str) -> None:
    """alice may not (dis)connect bob's container, named the ways the daemon resolves it; bob may."""
    harness.add_policy_lines(tmp_path, NETWORK_POLICY)
    cid = await bobs_real_container(harness)
    daemon_name = harness.real.name_of(cid)  # unknown to the ledger: resolved by asking the daemon
    uri = f"/v1.41/networks/none/{action}"
    for reference in (cid, cid[:12], daemon_name, f"/{daemon_name}"):
        for body in ({"Container": reference}, {"container": reference}, {"Container": "x", "CONTAINER": reference}):
            verdict = await harness.ask("POST", uri, body=body)
            assert not verdict.allow, (reference, body)
            assert f"alice may not network.{action} none: it acts on bob's container" in verdict.message
            assert f"others, network.{action}`" in verdict.message
            assert (await harness.ask("POST", uri, user="bob", body=body)).allow, (reference, body)


async def test_network_attach_of_unrecorded_container_needs_others(harness: Harness, tmp_path: Path) -> None:
    """A container fixeduser never saw created has no owner: only `others` (the admin) may connect it."""
    harness.add_policy_lines(tmp_path, NETWORK_POLICY)
    cid = harness.real.container("unrecorded")
    for reference in (cid, harness.real.name_of(cid), "no-such-container"):
        verdict = await harness.ask("POST", "/networks/none/connect", body={"Container": reference})
        assert not verdict.allow and "a container fixeduser has no owner for" in verdict.message, verdict.message
        assert (await harness.ask("POST", "/networks/none/connect", user="", body={"Container": reference})).allow


@pytest.mark.parametrize(
    ("body", "reason"),
    [(None, "request body is missing"), (b'{"Container": "x"', "cannot read"), (b"[]", "must be a JSON object"),
     (b'{"Container": 7}', "cannot read")],
)  # fmt: skip
async def test_network_attach_unreadable_body_denied(harness: Harness, tmp_path: Path, body: Any, reason: str) -> None:
    """Without a readable body fixeduser cannot know which container is meant: denied, saying so."""
    harness.add_policy_lines(tmp_path, NETWORK_POLICY)
    for action in ("connect", "disconnect"):
        verdict = await harness.ask("POST", f"/networks/none/{action}", body=body)
        assert not verdict.allow and reason in verdict.message, verdict.message
        assert f"alice may not network.{action}: fixeduser cannot read the network {action} body" in verdict.message


async def test_network_connect_link_to_others_container_is_an_escalation(harness: Harness, tmp_path: Path) -> None:
    """Connecting one's own container with a link to bob's is the `links` escalation, as at create."""
    harness.add_policy_lines(tmp_path, NETWORK_POLICY)
    await harness.create_container("alice", "alices", "a" * 64)
    bobs = await bobs_real_container(harness)
    body = {"Container": "alices", "EndpointConfig": {"Links": [f"{bobs[:12]}:db"]}}
    verdict = await harness.ask("POST", "/networks/none/connect", body=body)
    assert not verdict.allow and "escalation `links`" in verdict.message, verdict.message
    own = {"Container": "alices", "EndpointConfig": {"Links": ["alices:me"]}}
    assert (await harness.ask("POST", "/networks/none/connect", body=own)).allow
    # NetworkDisconnect has no EndpointConfig: the daemon ignores one, and so does fixeduser.
    assert (await harness.ask("POST", "/networks/none/disconnect", body=body)).allow


# ---- tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"/v1.41/tasks/{TASK_ID}/logs?stdout=1", f"/tasks/{TASK_ID[:6]}"])
async def test_task_of_unanswerable_daemon_is_denied(harness: Harness, tmp_path: Path, path: str) -> None:
    """The real daemon is not a swarm manager: it cannot say whose task it is, so the request is denied."""
    harness.add_policy_lines(tmp_path, SWARM_POLICY)
    verdict = await harness.ask("GET", path)
    assert not verdict.allow and "cannot check whose task it is" in verdict.message, verdict.message
    assert "503" in verdict.message and "not a swarm manager" in verdict.message
    assert (await harness.ask("GET", path, user="")).allow  # `others` (the admin) needs no look-up


class SwarmManagerTasks(DaemonClient):
    """The one answer the session's daemon cannot give for real: a swarm manager's `GET /tasks/{id}`.

    A test dockerd must not become a swarm manager (`swarm init` creates a 10.0.0.0/24 ingress
    network), so this double answers task look-ups; every other look-up goes to the real daemon.
    """

    tasks: dict[str, str] = {TASK_ID: SERVICE_ID}  # noqa: RUF012 - read-only table of this double

    async def inspect_task(self, reference: str) -> InspectedTask | None:
        matches = [tid for tid in self.tasks if tid.startswith(reference)] if reference else []
        return InspectedTask(ID=matches[0], ServiceID=self.tasks[matches[0]]) if len(matches) == 1 else None


@pytest.fixture
async def swarm(tmp_path: Path, harness: Harness) -> AsyncIterator[Harness]:
    client = SwarmManagerTasks(harness.real.dockerd.host)
    made, store = make_harness(tmp_path / "swarm", client, harness.real)
    made.add_policy_lines(tmp_path, SWARM_POLICY)
    spec = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}
    await made.respond("POST", "/services/create", user="bob", body=spec, status=201, response={"ID": SERVICE_ID})
    try:
        yield made
    finally:
        store.close()
        await client.close()


@pytest.mark.parametrize(
    "path", [f"/tasks/{TASK_ID}/logs?stdout=1", f"/v1.41/tasks/{TASK_ID[:8]}/logs", f"/tasks/{TASK_ID}"]
)
async def test_task_logs_and_inspect_belong_to_the_service_creator(swarm: Harness, path: str) -> None:
    """bob created the task's service: he may read its logs and spec; alice may not; the admin may."""
    assert (await swarm.ask("GET", path, user="bob")).allow
    verdict = await swarm.ask("GET", path)
    assert not verdict.allow and "bob's service's task" in verdict.message, verdict.message
    assert "others, task." in verdict.message
    assert (await swarm.ask("GET", path, user="")).allow


async def test_task_the_daemon_does_not_know_has_no_owner(swarm: Harness) -> None:
    """A task ID the daemon cannot resolve belongs to nobody fixeduser knows: only `others` may ask."""
    verdict = await swarm.ask("GET", "/tasks/nosuchtask/logs", user="bob")
    assert not verdict.allow and "a service's task fixeduser has no owner for" in verdict.message, verdict.message


async def test_task_without_daemon_is_denied(tmp_path: Path) -> None:
    """With no daemon connection there is no way to tell whose task it is: denied."""
    harness, store = make_harness(tmp_path, daemon=False)
    try:
        harness.add_policy_lines(tmp_path, SWARM_POLICY)
        verdict = await harness.ask("GET", f"/tasks/{TASK_ID}/logs")
        assert not verdict.allow and "no daemon connection to check whose task it is" in verdict.message
    finally:
        store.close()


# ---- the host network by ID or prefix ---------------------------------------------------------


def host_references(harness: Harness) -> list[str]:
    host = harness.real.network_id("host")
    return [host, host[:12], host[:4]]


async def test_container_on_host_network_by_id_is_an_escalation(harness: Harness) -> None:
    """NetworkMode naming the host network by ID or ID prefix needs `namespaces`, like `host`."""
    for reference in host_references(harness):
        body = {"Image": "busybox", "HostConfig": {"NetworkMode": reference}}
        verdict = await harness.ask("POST", CREATE, body=body)
        assert not verdict.allow, reference
        assert f"--network={reference} (the host network): escalation `namespaces`" in verdict.message
        assert (await harness.ask("POST", CREATE, user="", body=body)).allow


@pytest.mark.parametrize("network", ["none-id", "not-yet-created"])
async def test_container_on_other_networks_by_reference_allowed(harness: Harness, network: str) -> None:
    """The `none` network by ID, or a network that does not exist (yet; it can never be the host's): no grant."""
    reference = harness.real.network_id("none") if network == "none-id" else network
    verdict = await harness.ask("POST", CREATE, body={"Image": "busybox", "HostConfig": {"NetworkMode": reference}})
    assert verdict.allow, verdict.message


def service_on(*targets: str, top_level: bool = False) -> dict[str, Any]:
    networks = [{"Target": t} for t in targets]
    task: dict[str, Any] = {"ContainerSpec": {"Image": "busybox"}}
    spec: dict[str, Any] = {"Name": "web", "TaskTemplate": task}
    if top_level:
        spec["Networks"] = networks  # the deprecated Spec.Networks, still read
    else:
        task["Networks"] = networks
    return spec


@pytest.mark.parametrize("top_level", [False, True])
async def test_service_on_host_network_by_id_is_an_escalation(
    harness: Harness, tmp_path: Path, top_level: bool
) -> None:
    """A service's network target that the daemon resolves to the host network needs `namespaces`."""
    harness.add_policy_lines(tmp_path, SWARM_POLICY)
    none = harness.real.network_id("none")
    created = await harness.respond("POST", "/services/create", body=service_on(none), status=201,
                                    response={"ID": SERVICE_ID})  # fmt: skip
    assert created.allow  # alice's own service, so the update below is hers to make
    for reference in host_references(harness):
        spec = service_on(none, reference, top_level=top_level)
        for uri in ("/services/create", f"/v1.41/services/{SERVICE_ID}/update?version=2"):
            verdict = await harness.ask("POST", uri, body=spec)
            assert not verdict.allow, (uri, reference)
            assert f"with network {reference} (the host network): escalation `namespaces`" in verdict.message
        assert (await harness.ask("POST", "/services/create", user="", body=spec)).allow
    assert (await harness.ask("POST", "/services/create", body=service_on(none, top_level=top_level))).allow


@pytest.mark.parametrize("target", ["no-such-network", ""])
async def test_service_on_unknown_network_is_denied(harness: Harness, tmp_path: Path, target: str) -> None:
    """A service network the daemon cannot describe cannot be shown not to be the host network: denied."""
    harness.add_policy_lines(tmp_path, SWARM_POLICY)
    verdict = await harness.ask("POST", "/services/create", body=service_on(target))
    assert not verdict.allow
    assert f"network {target!r} does not exist here, so fixeduser cannot check" in verdict.message


async def test_network_look_up_failure_is_a_denial(tmp_path: Path) -> None:
    """A daemon that does not answer (no socket) makes every network reference a denial, never an allow."""
    client = DaemonClient(f"unix://{tmp_path}/no-daemon.sock")
    harness, store = make_harness(tmp_path, client)
    try:
        body = {"Image": "busybox", "HostConfig": {"NetworkMode": "somenet"}}
        verdict = await harness.ask("POST", CREATE, body=body)
        assert not verdict.allow
        assert "cannot check that network 'somenet' is not the host network (cannot reach" in verdict.message
        harness.add_policy_lines(tmp_path, SWARM_POLICY)
        verdict = await harness.ask("POST", "/services/create", body=service_on("somenet"))
        assert not verdict.allow and "cannot check that network 'somenet'" in verdict.message
    finally:
        store.close()
        await client.close()
