"""No side doors: old API versions, start bodies, bodies the daemon did not show, and the newer fields
(annotations, per-endpoint sysctls) that reach the host, decided with the example policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fixeduser.authz.authorizer import Authorizer
from fixeduser.state.handoff import MountGate

from .conftest import Harness, make_harness

A_ID = "a" * 64
SYSCTLS_OPT = "com.docker.network.endpoint.sysctls"


def create_body(**host: Any) -> dict[str, Any]:
    return {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none", **host}}


# ---- API versions ---------------------------------------------------------------------------------

OLD_VERSIONS = ["1.12", "1.23", "1.023", "01.20", "1.", ".", "1", "0.99999999999999999999999", "1.23.99999"]
CURRENT_VERSIONS = ["1.24", "1.024", "1.24.0", "1.41", "1.99999999999999999999"]


@pytest.mark.parametrize("version", OLD_VERSIONS)
@pytest.mark.parametrize("user", ["alice", ""])
async def test_old_api_versions_are_denied_naming_the_version(harness: Harness, version: str, user: str) -> None:
    """Every route, ping included, for engineers and the local admin alike."""
    await harness.create_container("alice", "alices", A_ID)
    for method, path in (("HEAD", "_ping"), ("GET", "version"), ("POST", "containers/alices/start"),
                         ("POST", "containers/create")):  # fmt: skip
        body = create_body() if path.endswith("create") else None
        verdict = await harness.ask(method, f"/v{version}/{path}", user=user, body=body)
        assert not verdict.allow, (version, path)
        assert f"API version {version} is older than 1.24" in verdict.message, verdict.message


@pytest.mark.parametrize("version", CURRENT_VERSIONS)
async def test_current_api_versions_pass(harness: Harness, version: str) -> None:
    assert (await harness.ask("HEAD", f"/v{version}/_ping")).allow
    assert (await harness.ask("GET", f"/v{version}/containers/json")).allow


async def test_unversioned_paths_are_the_current_version(harness: Harness) -> None:
    assert (await harness.ask("HEAD", "/_ping")).allow
    assert (await harness.ask("GET", "/containers/json")).allow


async def test_old_version_on_an_unknown_route_is_denied_even_when_unknown_routes_are_allowed(tmp_path: Path) -> None:
    """20.10 still serves `POST /v1.19/containers/{id}/copy`, a route fixeduser does not know."""
    harness, store = make_harness(tmp_path)
    try:
        permissive = Authorizer(
            policy=lambda: harness.policy[0], ledger=harness.ledger, registry=harness.registry,
            gate=MountGate(), auditor=harness.auditor, driver_name="fixeduser", protected_paths=[],
            daemon=None, allow_unknown_routes=True,
        )  # fmt: skip
        old = await permissive.authorize_request(harness.request("POST", "/v1.19/containers/x/copy", body={}))
        assert not old.allow and "API version 1.19 is older than 1.24" in old.message
        new = await permissive.authorize_request(harness.request("POST", "/v1.41/containers/x/copy", body={}))
        assert new.allow
    finally:
        store.close()


# ---- container start bodies -----------------------------------------------------------------------

START = "/v1.41/containers/alices/start"


@pytest.mark.parametrize("body", [b" ", b"\r\n", b"{}", b"{ }", b"null", b" null\n"])
async def test_empty_start_bodies_are_allowed(harness: Harness, body: bytes) -> None:
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask("POST", START, body=body)
    assert verdict.allow, verdict.message


async def test_start_without_a_body_is_allowed(harness: Harness) -> None:
    await harness.create_container("alice", "alices", A_ID)
    assert (await harness.ask("POST", START)).allow  # Content-Length: 0, as the docker CLI sends


@pytest.mark.parametrize(
    "body",
    [
        {"HostConfig": {}},
        {"hostconfig": {"Binds": ["/:/host"]}},
        {"Binds": ["/:/host"]},
        {"Privileged": True},
        [],
        b'{"a":1}',
        b"{",
    ],
)
@pytest.mark.parametrize("user", ["alice", ""])
async def test_non_empty_start_bodies_are_denied(harness: Harness, body: Any, user: str) -> None:
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask("POST", START, user=user, body=body)
    assert not verdict.allow
    assert "cannot read the container start body" in verdict.message, verdict.message


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Content-Type": "application/json", "Content-Length": "1048626"}, "1048626-byte body"),
        ({"Content-Type": "text/plain", "Content-Length": "28"}, "28-byte body"),
        ({"Content-Type": "application/json"}, "no Content-Length"),  # chunked, over 1 MiB
        ({}, "no Content-Length"),
    ],
)
async def test_start_with_a_body_not_shown_is_denied(harness: Harness, headers: dict[str, str], reason: str) -> None:
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask("POST", START, headers=headers)
    assert not verdict.allow and reason in verdict.message, verdict.message
    assert verdict.message.startswith(
        "alice may not container.start: the request body is missing from what the daemon sent fixeduser"
    )


@pytest.mark.parametrize(
    "query",
    ["checkpoint=c1", "checkpoint=c1&checkpoint-dir=/var/lib/x", "checkpoint-dir=/etc", "checkpoint=&checkpoint=x"],
)
async def test_start_from_a_checkpoint_is_an_escalation(harness: Harness, query: str) -> None:
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask("POST", f"{START}?{query}")
    if query == "checkpoint=&checkpoint=x":  # the daemon reads the first value only
        assert verdict.allow, verdict.message
        return
    assert not verdict.allow and "escalation `checkpoints`" in verdict.message, verdict.message
    assert (await harness.ask("POST", f"{START}?{query}", user="")).allow


# ---- bodies not shown, on every route whose body is read ---------------------------------------------

BODY_ROUTES = [
    ("POST", "/v1.41/containers/create"),
    ("POST", "/v1.41/containers/alices/update"),
    ("POST", "/v1.41/containers/alices/exec"),
    ("POST", "/v1.41/volumes/create"),
    ("POST", "/v1.41/networks/none/connect"),
    ("POST", "/v1.41/networks/none/disconnect"),
    ("POST", "/v1.41/services/create"),
    ("POST", "/v1.41/services/x/update"),
]


@pytest.mark.parametrize(("method", "uri"), BODY_ROUTES)
@pytest.mark.parametrize("headers", [{"Content-Length": "2000000"}, {}], ids=["too-big", "chunked"])
async def test_bodies_not_shown_are_denied_to_everyone(
    harness: Harness, method: str, uri: str, headers: dict[str, str]
) -> None:
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask(method, uri, user="", headers={"Content-Type": "application/json", **headers})
    assert not verdict.allow and "request body is missing from what the daemon sent fixeduser" in verdict.message, (
        verdict.message
    )


async def test_update_with_a_body_not_shown_is_denied_but_a_shown_one_passes(harness: Harness) -> None:
    """An unseen update could set a restart policy the ledger never records."""
    await harness.create_container("alice", "alices", A_ID)
    uri = "/v1.41/containers/alices/update"
    verdict = await harness.ask("POST", uri, headers={"Content-Type": "application/json", "Content-Length": "2000000"})
    assert not verdict.allow and "2000000-byte body" in verdict.message
    assert (await harness.ask("POST", uri, body={"RestartPolicy": {"Name": "always"}, "Memory": 1 << 26})).allow


# ---- annotations and per-endpoint sysctls -------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        {"Annotations": {"org.systemd.property.DeviceAllow": "char-* rwm"}},
        {"annotations": {"org.systemd.property.Delegate": "yes"}},
        {"ANNOTATIONS": {"run.oci.keep_original_groups": "1"}},
        {"Annotation\u017f": {"a": "b"}},
        {"Annotations": {"a": None}},
    ],
)
async def test_annotations_are_an_escalation(harness: Harness, host: dict[str, Any]) -> None:
    verdict = await harness.ask("POST", "/v1.47/containers/create", body=create_body(**host))
    assert not verdict.allow and "escalation `annotations`" in verdict.message, verdict.message
    assert (await harness.ask("POST", "/v1.47/containers/create", user="", body=create_body(**host))).allow


@pytest.mark.parametrize(
    "host", [{"Annotations": {}}, {"Annotations": None}, {"Annotations": {"a": "1"}, "annotations": None}]
)
async def test_no_annotations_need_no_grant(harness: Harness, host: dict[str, Any]) -> None:
    assert (await harness.ask("POST", "/v1.47/containers/create", body=create_body(**host))).allow


def networked(endpoints: dict[str, Any]) -> dict[str, Any]:
    return {**create_body(), "NetworkingConfig": {"EndpointsConfig": endpoints}}


@pytest.mark.parametrize(
    "endpoints",
    [
        {"none": {"DriverOpts": {SYSCTLS_OPT: "net.ipv4.conf.IFNAME.forwarding=1"}}},
        {"none": {"driveropts": {SYSCTLS_OPT: "net.ipv6.conf.IFNAME.disable_ipv6=0"}}},
        {"none": {"DriverOpts": {SYSCTLS_OPT: ""}}},
        {"none": {"DriverOpts": {"x": "1"}, "DRIVEROPTS": {SYSCTLS_OPT: "net.mpls.conf.IFNAME.input=1"}}},
    ],
)
async def test_endpoint_sysctls_in_a_create_are_the_sysctls_escalation(
    harness: Harness, endpoints: dict[str, Any]
) -> None:
    verdict = await harness.ask("POST", "/v1.47/containers/create", body=networked(endpoints))
    assert not verdict.allow and "escalation `sysctls`" in verdict.message, verdict.message
    assert "network 'none'" in verdict.message


async def test_other_endpoint_driver_options_need_no_grant(harness: Harness) -> None:
    body = networked({"none": {"DriverOpts": {"com.docker.network.endpoint.ifname": "eth1", SYSCTLS_OPT.upper(): "1"}}})
    assert (await harness.ask("POST", "/v1.47/containers/create", body=body)).allow


ENGINEERS_MAY_CONNECT = "p, role:eng, api, network.connect\np, role:eng, api, service.create\n"


async def test_endpoint_sysctls_in_a_network_connect(harness: Harness, tmp_path: Path) -> None:
    harness.add_policy_lines(tmp_path, ENGINEERS_MAY_CONNECT)
    await harness.create_container("alice", "alices", A_ID)
    uri = "/v1.47/networks/none/connect"
    plain = {"Container": "alices", "EndpointConfig": {"DriverOpts": {"com.docker.network.endpoint.ifname": "x"}}}
    assert (await harness.ask("POST", uri, body=plain)).allow
    for endpoint in ({"DriverOpts": {SYSCTLS_OPT: "net.ipv4.conf.IFNAME.forwarding=1"}},
                     {"driveropts": {SYSCTLS_OPT: "x"}}):  # fmt: skip
        for key in ("EndpointConfig", "endpointconfig"):
            verdict = await harness.ask("POST", uri, body={"Container": "alices", key: endpoint})
            assert not verdict.allow and "escalation `sysctls`" in verdict.message, verdict.message
    # NetworkDisconnect has no EndpointConfig: the daemon ignores one
    harness.add_policy_lines(tmp_path, ENGINEERS_MAY_CONNECT + "p, role:eng, api, network.disconnect\n")
    body = {"Container": "alices", "EndpointConfig": {"DriverOpts": {SYSCTLS_OPT: "x"}}}
    assert (await harness.ask("POST", "/v1.47/networks/none/disconnect", body=body)).allow


async def test_endpoint_sysctls_in_a_service_network_attachment(harness: Harness, tmp_path: Path) -> None:
    harness.add_policy_lines(tmp_path, ENGINEERS_MAY_CONNECT)
    task = {"ContainerSpec": {"Image": "busybox"}}
    for spec in (
        {"Name": "w", "TaskTemplate": {**task, "Networks": [{"Target": "none", "DriverOpts": {SYSCTLS_OPT: "x"}}]}},
        {"Name": "w", "TaskTemplate": task, "networks": [{"target": "none", "driveropts": {SYSCTLS_OPT: "x"}}]},
    ):
        verdict = await harness.ask("POST", "/v1.47/services/create", body=spec)
        assert not verdict.allow and "escalation `sysctls`" in verdict.message, verdict.message


# ---- BuildKit's gRPC API -------------------------------------------------------------------------------


async def test_grpc_needs_the_buildkit_escalation(harness: Harness, tmp_path: Path) -> None:
    harness.add_policy_lines(tmp_path, "p, role:eng, api, grpc.start\n")
    verdict = await harness.ask("POST", "/grpc")
    assert not verdict.allow and "escalation `buildkit`" in verdict.message, verdict.message
    assert (await harness.ask("POST", "/grpc", user="")).allow


def test_request_helper_sends_content_length_like_the_daemon() -> None:
    request = Harness.request("POST", "/x", body={"a": 1})
    assert request.header("Content-Length") == str(len(json.dumps({"a": 1})))
    assert Harness.request("POST", "/x").header("Content-Length") == "0"


# ---- builds: the query as the daemon reads it ----------------------------------------------------------

BUILDERS = "p, role:eng, api, image.build\n"


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("networkmode=host&networkmode=none", "namespaces"),  # Go's FormValue: the first value
        ("cgroupparent=%2Fx&cgroupparent=", "cgroup-parent"),
        ("securityopt=seccomp%3Dunconfined", "security-options"),
        ("securityopt=no-new-privileges&securityopt=apparmor%3Dunconfined", "security-options"),
        ("securityopt=label%3Ddisable", "security-options"),
    ],
)
async def test_build_query_read_like_the_daemon(harness: Harness, tmp_path: Path, query: str, kind: str) -> None:
    harness.add_policy_lines(tmp_path, BUILDERS)
    verdict = await harness.ask("POST", f"/v1.41/build?t=x&{query}")
    assert not verdict.allow and f"escalation `{kind}`" in verdict.message, verdict.message


@pytest.mark.parametrize(
    "query", ["networkmode=none&networkmode=host", "securityopt=no-new-privileges", "networkmode=default"]
)
async def test_ordinary_build_queries_pass(harness: Harness, tmp_path: Path, query: str) -> None:
    harness.add_policy_lines(tmp_path, BUILDERS)
    verdict = await harness.ask("POST", f"/v1.41/build?t=x&{query}")
    assert verdict.allow, verdict.message


async def test_build_on_the_host_network_by_id_is_namespaces(real_harness: Harness, tmp_path: Path) -> None:
    harness = real_harness
    harness.add_policy_lines(tmp_path, BUILDERS)
    host = harness.real.network_id("host")
    for reference in (host, host[:12]):
        verdict = await harness.ask("POST", f"/v1.41/build?networkmode={reference}")
        assert not verdict.allow and "(the host network)" in verdict.message and "namespaces" in verdict.message
    assert (await harness.ask("POST", f"/v1.41/build?networkmode={harness.real.network_id('none')}")).allow
