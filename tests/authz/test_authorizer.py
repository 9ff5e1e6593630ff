"""Authorizer decisions with the example policy: escalations, ownership, control routes, bodies."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fixeduser.docker_api.daemon import DaemonClient
from fixeduser.state.ledger import ContainerLedger, ContainerRecord
from fixeduser.state.store import StateStore

from .conftest import Harness, make_harness
from .other_driver import OtherDriver

CREATE = "/v1.41/containers/create"
A_ID, B_ID = "a" * 64, "b" * 64
EXEC_A, EXEC_B = "e" * 63 + "a", "e" * 63 + "b"


def create_body(**host: Any) -> dict[str, Any]:
    return {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none", **host}}


ESCALATING_HOST_CONFIGS = [
    ({"Privileged": True}, "privileged"),
    ({"privileged": True}, "privileged"),
    ({"CapAdd": ["SYS_ADMIN"]}, "capabilities"),
    ({"CapAdd": "NET_ADMIN"}, "capabilities"),
    ({"Capabilities": ["CAP_SYS_ADMIN"]}, "capabilities"),
    ({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]},
     "devices"),
    ({"DeviceCgroupRules": ["b *:* rwm"]}, "devices"),
    ({"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}, "devices"),
    ({"PidMode": "host"}, "namespaces"),
    ({"IpcMode": "host"}, "namespaces"),
    ({"UTSMode": "host"}, "namespaces"),
    ({"UsernsMode": "host"}, "namespaces"),
    ({"CgroupnsMode": "host"}, "namespaces"),
    ({"NetworkMode": "host"}, "namespaces"),
    ({"NetworkMode": "container:bobs"}, "namespaces"),
    ({"IpcMode": "container:bobs"}, "namespaces"),
    ({"PidMode": "container:" + B_ID[:12]}, "namespaces"),
    ({"Cgroup": "container:bobs"}, "namespaces"),
    ({"Links": ["bobs:db"]}, "links"),
    ({"SecurityOpt": ["seccomp=unconfined"]}, "security-options"),
    ({"SecurityOpt": ["apparmor=unconfined"]}, "security-options"),
    ({"SecurityOpt": ["label=disable"]}, "security-options"),
    ({"MaskedPaths": []}, "security-options"),
    ({"ReadonlyPaths": []}, "security-options"),
    ({"Binds": ["/etc:/host"]}, "protected-bind"),  # /etc holds /etc/docker/plugins
    ({"Binds": ["/usr/share:/host"]}, "bind:/usr/share, bind"),
    ({"Binds": ["/tmp/../usr/share:/host:ro"]}, "bind:/usr/share, bind"),
    ({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h", "BindOptions": {"Propagation": "rshared"}}]},
     "protected-bind"),
    ({"Mounts": [{"Type": "bind", "Source": "/usr/share", "Target": "/h"}]}, "bind:/usr/share, bind"),
    ({"Mounts": [{"Type": "bind", "Source": "relative", "Target": "/h"}]}, "protected-bind"),
    ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"DriverConfig": {
        "Name": "local", "Options": {"type": "none", "device": "/", "o": "bind"}}}}]}, "volume-driver-bind"),
    ({"Mounts": [{"Type": "volume", "Target": "/h", "VolumeOptions": {"DriverConfig": {
        "Options": {"device": "/etc"}}}}]}, "volume-driver-bind"),
    ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"DriverConfig": {
        "Name": "nfs", "Options": {"share": "server:/export"}}}}]}, "driver nfs options ['share']"),
    ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"DriverConfig": {
        "Name": "fixeduser:v2", "Options": {"user": "root"}}}}]}, "volume-driver-bind"),
    ({"Binds": ["/run/docker/plugins:/p"]}, "protected-bind"),
    ({"Binds": ["/var/run/docker.sock:/s"]}, "protected-bind"),
    ({"VolumesFrom": ["bobs"]}, "volumes-from"),
    ({"VolumesFrom": ["unknown-container:ro"]}, "volumes-from"),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}}, "sysctls"),
    ({"Runtime": "runsc"}, "runtime"),
    ({"CgroupParent": "/"}, "cgroup-parent"),
]  # fmt: skip


@pytest.mark.parametrize(("host", "needed"), ESCALATING_HOST_CONFIGS)
async def test_escalations_denied_to_engineer_and_allowed_to_admin(
    harness: Harness, host: dict[str, Any], needed: str
) -> None:
    """Each escalation is denied to alice naming the missing line; @local (role:admin) may."""
    await harness.create_container("bob", "bobs", B_ID)
    verdict = await harness.ask("POST", CREATE, body=create_body(**host))
    assert not verdict.allow
    assert verdict.message.startswith("alice may not create a container with"), verdict.message
    assert needed in verdict.message
    assert "p, <alice or one of its roles>" in verdict.message
    assert (await harness.ask("POST", CREATE, user="", body=create_body(**host))).allow


async def test_protected_bind_through_symlink(harness: Harness, tmp_path: Path) -> None:
    """A bind of a symlink (or a `..` path) that resolves into a protected root is a protected bind."""
    link = tmp_path / "innocent"
    link.symlink_to(harness.protected / "root")
    for source in (str(link), f"{tmp_path}/x/../protected/root/sub", str(harness.protected)):
        verdict = await harness.ask("POST", CREATE, body=create_body(Binds=[f"{source}:/data"]))
        assert not verdict.allow and "protected-bind" in verdict.message, (source, verdict.message)


@pytest.mark.parametrize(
    "host",
    [
        {"Tmpfs": {"/run": "rw,size=64m"}},
        {"Mounts": [{"Type": "tmpfs", "Target": "/t"}]},
        {"SecurityOpt": ["no-new-privileges"]},
        {"CapDrop": ["ALL"]},
        {"IpcMode": "private"},
        {"IpcMode": "container:alices"},
        {"NetworkMode": "container:alices"},
        {"VolumesFrom": ["alices:ro"]},
        {"Links": ["alices"]},
        {"Binds": ["plainvol:/data"]},
        {"Binds": ["plainvol:/data"], "VolumeDriver": "nfs"},
        {
            "Mounts": [
                {"Type": "volume", "Source": "n", "Target": "/n", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}}
            ]
        },
        {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}},
    ],
)
async def test_ordinary_options_allowed(harness: Harness, host: dict[str, Any]) -> None:
    """tmpfs, dropping capabilities, own containers' namespaces and plain named volumes need no grant."""
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask("POST", CREATE, body=create_body(**host))
    assert verdict.allow, verdict.message


async def test_existing_local_bind_volume_is_an_escalation(real_harness: Harness) -> None:
    """A `local` volume the admin created with bind options cannot be used by name by alice; a plain one can."""
    harness = real_harness
    hostroot = harness.real.volume("hostroot", "-d", "local", "-o", "type=none", "-o", "device=/", "-o", "o=bind")
    plain = harness.real.volume("plain")
    for host in ({"Binds": [f"{hostroot}:/h"]}, {"Mounts": [{"Type": "volume", "Source": hostroot, "Target": "/h"}]}):
        verdict = await harness.ask("POST", CREATE, body=create_body(**host))
        assert not verdict.allow and "volume-driver-bind" in verdict.message and hostroot in verdict.message
    assert (await harness.ask("POST", CREATE, body=create_body(Binds=[f"{plain}:/p"]))).allow


async def test_existing_volume_of_another_driver_with_options_is_an_escalation(
    real_harness: Harness, other_driver: OtherDriver
) -> None:
    """A volume another driver made with options (what it mounts, as whom: fixeduser cannot judge) cannot be used by
    name without the grant; one it made without options can, and an admin may use either."""
    harness = real_harness
    share = other_driver.volume(harness.real.dockerd, "share", "-o", "export=/", "-o", "user=root")
    plain = other_driver.volume(harness.real.dockerd, "plain")
    assert other_driver.options[share] == {"export": "/", "user": "root"}  # the daemon did call that driver
    for host in ({"Binds": [f"{share}:/h"]}, {"Mounts": [{"Type": "volume", "Source": share, "Target": "/h"}]}):
        verdict = await harness.ask("POST", CREATE, body=create_body(**host))
        assert not verdict.allow, verdict.message
        assert "volume-driver-bind" in verdict.message and share in verdict.message, verdict.message
        assert f"driver {other_driver.name} options ['export', 'user']" in verdict.message, verdict.message
        assert (await harness.ask("POST", CREATE, user="", body=create_body(**host))).allow
    assert (await harness.ask("POST", CREATE, body=create_body(Binds=[f"{plain}:/p"]))).allow


async def test_a_record_does_not_hide_what_the_daemon_mounts(real_harness: Harness) -> None:
    """A name fixeduser has a volume record of (made on another host of a cluster, say) that is a `local` bind volume
    on this daemon is judged by what the daemon will mount, not by the record: denied, even to a caller whose
    policy grants `volume-driver-bind` (@local), since the volume is not the fixeduser volume it is named as."""
    harness = real_harness
    name = harness.real.volume("eng-hostroot", "-d", "local", "-o", "type=none", "-o", "device=/", "-o", "o=bind")
    await harness.add_volume(name)
    for user in ("alice", ""):
        verdict = await harness.ask("POST", CREATE, user=user, body=create_body(Binds=[f"{name}:/h"]))
        assert not verdict.allow, verdict.message
        assert f"volume {name}: it is a fixeduser volume" in verdict.message and "`local` volume" in verdict.message


async def test_a_squatted_fixeduser_name_is_denied(real_harness: Harness) -> None:
    """bob made a plain `local` volume on this daemon under the name of a fixeduser volume (made on another host of a
    cluster): whoever mounts that name here would write into bob's volume, so it is denied, saying why."""
    harness = real_harness
    name = harness.real.volume("eng-squatted")
    await harness.add_volume(name)
    verdict = await harness.ask("POST", CREATE, body=create_body(Binds=[f"{name}:/h"]))
    assert not verdict.allow
    assert verdict.message.startswith(f"alice may not use volume {name}: it is a fixeduser volume"), verdict.message
    assert "`local` volume" in verdict.message


async def test_named_volume_without_daemon_is_denied(tmp_path: Path) -> None:
    """With no daemon to ask what a named volume is, using it is denied rather than assumed safe."""
    from .conftest import make_harness  # noqa: PLC0415

    harness, store = make_harness(tmp_path, daemon=False)
    try:
        verdict = await harness.ask("POST", CREATE, body=create_body(Binds=["v1:/data"]))
        assert not verdict.allow and "no daemon connection to check what it mounts" in verdict.message
    finally:
        store.close()


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"Name": "x", "Driver": "local", "DriverOpts": {"type": "none", "device": "/", "o": "bind"}},
        {"Name": "x", "DriverOpts": {"device": "/etc"}},
        {"name": "x", "driver": "local", "driveropts": {"o": "bind"}},
        {"Name": "x", "Driver": "nfs", "DriverOpts": {"share": "server:/export"}},
        {"Name": "x", "Driver": "fixeduser:v2", "DriverOpts": {"user": "root"}},
    ],
)
async def test_volume_create_bind_in_disguise_or_missing_body(harness: Harness, body: Any) -> None:
    """`docker volume create -o type=none -o device=/ -o o=bind`, any other driver's options and a body-less
    create are denied."""
    verdict = await harness.ask("POST", "/volumes/create", body=body)
    assert not verdict.allow
    assert "volume-driver-bind" in verdict.message or "cannot read" in verdict.message, verdict.message


@pytest.mark.parametrize("driver", ["", "local", "nfs"])
async def test_volume_create_without_options_allowed(harness: Harness, driver: str) -> None:
    """A volume of any driver without options is the driver's ordinary volume: no grant needed."""
    verdict = await harness.ask("POST", "/volumes/create", body={"Name": "x", "Driver": driver, "DriverOpts": {}})
    assert verdict.allow, verdict.message


@pytest.mark.parametrize("action", ["container.create", "exec.create", "volume.create"])
async def test_missing_body_is_denied_with_reason(harness: Harness, action: str) -> None:
    """Decisions that need a body deny when the daemon did not forward it, and say so."""
    await harness.create_container("alice", "alices", A_ID)
    uri = {"container.create": CREATE, "exec.create": "/containers/alices/exec", "volume.create": "/volumes/create"}
    verdict = await harness.ask("POST", uri[action])
    assert not verdict.allow
    assert verdict.message.startswith(f"alice may not {action}: fixeduser cannot read")
    assert "request body is missing" in verdict.message


async def test_truncated_body_is_denied(harness: Harness) -> None:
    """A body cut short is not JSON: denied, never read as 'no escalation fields'."""
    verdict = await harness.ask("POST", CREATE, body=b'{"Image": "busybox", "HostConfig": {"Privileged": tr')
    assert not verdict.allow and "cannot read" in verdict.message


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("POST", "/v1.41/containers/bobs/start"),
        ("POST", "/containers/bobs/exec"),
        ("POST", "/v1.41/containers/bobs/attach?stream=1"),
        ("GET", "/containers/bobs/archive?path=/"),
        ("PUT", "/containers/bobs/archive?path=/"),
        ("POST", "/commit?container=bobs"),
        ("GET", "/containers/" + B_ID[:12] + "/export"),
        ("POST", "/containers/bobs/update"),
        ("POST", "/containers/bobs/rename?name=mine"),
        ("POST", "/containers/bobs/kill"),
        ("DELETE", "/containers/bobs?force=1"),
        ("DELETE", "/v1.41/containers/%62obs"),
        ("POST", "/v1.41/containers/./bobs/../bobs/stop"),
    ],
)
async def test_others_containers_are_off_limits(harness: Harness, method: str, uri: str) -> None:
    """alice may not touch bob's container by name, ID prefix, or a percent-encoded or uncleaned path."""
    await harness.create_container("bob", "bobs", B_ID)
    body = {"Cmd": ["sh"]} if uri.endswith("/exec") else None
    verdict = await harness.ask(method, uri, body=body)
    assert not verdict.allow
    assert "bob's container" in verdict.message and "others," in verdict.message, verdict.message


async def test_exec_ids_belong_to_the_container_owner(harness: Harness) -> None:
    """exec.start/resize/inspect of bob's exec (ID from the exec.create response) are refused to alice."""
    await harness.create_container("bob", "bobs", B_ID)
    body = {"Cmd": ["sh"], "AttachStdout": True}
    assert (await harness.ask("POST", "/containers/bobs/exec", user="bob", body=body)).allow
    response = {"Id": EXEC_B}
    await harness.respond("POST", "/containers/bobs/exec", user="bob", body=body, status=201, response=response)
    for method, uri in (("POST", f"/exec/{EXEC_B}/start"), ("POST", f"/v1.41/exec/{EXEC_B}/resize?h=1&w=1"),
                        ("GET", f"/exec/{EXEC_B}/json")):  # fmt: skip
        assert (await harness.ask(method, uri, user="bob")).allow
        verdict = await harness.ask(method, uri)
        assert not verdict.allow and "bob's exec instance" in verdict.message, verdict.message
    unknown = await harness.ask("POST", f"/exec/{EXEC_A}/start")
    assert not unknown.allow and "no owner" in unknown.message
    assert len(harness.ledger.execs) == 1
    await harness.respond("DELETE", "/containers/bobs", user="bob", status=204, response=b"")
    assert len(harness.ledger.execs) == 1  # the status of a removal is not trusted: the daemon still lists it
    harness.remove_container(B_ID)
    assert await harness.ledger.keep_only(await harness.known.container_ids(), among=harness.ledger.ids()) == 1
    assert len(harness.ledger.execs) == 0


async def test_exec_escalations(harness: Harness) -> None:
    """Privileged execs and execs as a chosen user are escalations, even in one's own container."""
    await harness.create_container("alice", "alices", A_ID)
    for body, kind in (({"Cmd": ["sh"], "Privileged": True}, "exec-privileged"),
                       ({"Cmd": ["sh"], "User": "0"}, "exec-user")):  # fmt: skip
        verdict = await harness.ask("POST", "/containers/alices/exec", body=body)
        assert not verdict.allow and kind in verdict.message


@pytest.mark.parametrize(
    ("method", "uri", "kind"),
    [
        ("POST", "/v1.41/plugins/fixeduser-authz/disable", "plugin-management"),
        ("POST", "/plugins/fixeduser-authz:latest/disable?force=1", "plugin-management"),
        ("DELETE", "/plugins/fixeduser-authz", "plugin-management"),
        ("POST", "/plugins/pull?remote=evil", "plugin-management"),
        ("POST", "/plugins/x/set", "plugin-management"),
        ("POST", "/plugins/x/upgrade", "plugin-management"),
        ("POST", "/plugins/x/enable", "plugin-management"),
        ("POST", "/plugins/create?name=x", "plugin-management"),
        ("POST", "/plugins/x/push", "plugin-management"),
        ("POST", "/swarm/init", "swarm-membership"),
        ("POST", "/swarm/join", "swarm-membership"),
        ("POST", "/swarm/leave", "swarm-membership"),
        ("POST", "/swarm/update", "swarm-membership"),
        ("GET", "/swarm/unlockkey", "swarm-membership"),
        ("POST", "/nodes/abc/update", "swarm-membership"),
    ],
)
async def test_control_routes_need_api_and_escalation(
    harness: Harness, tmp_path: Path, method: str, uri: str, kind: str
) -> None:
    """Plugin and swarm control is denied to engineers, and to `api, *` without the escalation."""
    verdict = await harness.ask(method, uri, body={})
    assert not verdict.allow and verdict.message.startswith("alice may not")
    assert (await harness.ask(method, uri, user="", body={})).allow  # role:admin has `*, *`
    harness.add_policy_lines(tmp_path, "p, role:eng, api, *\n")
    verdict = await harness.ask(method, uri, body={})
    assert not verdict.allow and f"escalation, {kind}`" in verdict.message, verdict.message


async def test_control_escalation_is_separate_from_api_permission(harness: Harness, tmp_path: Path) -> None:
    """A user granted `api, *` still needs the plugin-management escalation to disable a plugin."""
    harness.add_policy_lines(tmp_path, "p, ops, api, *\n")
    verdict = await harness.ask("POST", "/plugins/fixeduser-authz/disable", user="ops")
    assert not verdict.allow
    assert "escalation `plugin-management` needs `p, <ops or one of its roles>, escalation, plugin-management`" in (
        verdict.message
    )
    harness.add_policy_lines(tmp_path, "p, ops, api, *\np, ops, escalation, plugin-management\n")
    assert (await harness.ask("POST", "/plugins/fixeduser-authz/disable", user="ops")).allow


async def test_container_prune_needs_others(harness: Harness) -> None:
    """Pruning removes every user's stopped containers: engineers need `others, container.prune`."""
    verdict = await harness.ask("POST", "/containers/prune")
    assert not verdict.allow and "others, container.prune" in verdict.message


async def test_build_query_escalations(harness: Harness, tmp_path: Path) -> None:
    """`docker build --network host` / `--cgroup-parent` are escalations (RUN steps are containers)."""
    harness.add_policy_lines(tmp_path, "p, role:eng, api, image.build\n")
    assert (await harness.ask("POST", "/build?t=x&networkmode=none")).allow
    for query, kind in (("networkmode=host", "namespaces"), ("cgroupparent=%2F", "cgroup-parent"),
                        ("networkmode=container:bobs", "namespaces")):  # fmt: skip
        verdict = await harness.ask("POST", f"/build?{query}")
        assert not verdict.allow and f"escalation, {kind}`" in verdict.message, verdict.message


SERVICE = {
    "Name": "web",
    "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "1d"]}},
    "Mode": {"Replicated": {"Replicas": 1}},
}


def service(**container: Any) -> dict[str, Any]:
    spec = {**SERVICE, "TaskTemplate": {"ContainerSpec": {**SERVICE["TaskTemplate"]["ContainerSpec"], **container}}}
    return spec


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        (service(Mounts=[{"Type": "bind", "Source": "/usr/share", "Target": "/e"}]), "bind:/usr/share, bind"),
        (
            service(
                Mounts=[
                    {
                        "Type": "volume",
                        "Source": "eng-data",
                        "Target": "/d",
                        "VolumeOptions": {"DriverConfig": {"Name": "fixeduser"}},
                    }
                ]
            ),
            "service-volumes",
        ),
        (service(Mounts=[{"Type": "volume", "Source": "eng-known", "Target": "/d"}]), "service-volumes"),
        (
            service(
                Mounts=[
                    {
                        "Type": "volume",
                        "Source": "x",
                        "Target": "/d",
                        "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"device": "/", "o": "bind"}}},
                    }
                ]
            ),
            "volume-driver-bind",
        ),
        (
            service(
                Mounts=[
                    {
                        "Type": "volume",
                        "Source": "x",
                        "Target": "/d",
                        "VolumeOptions": {"DriverConfig": {"Name": "nfs", "Options": {"share": "server:/"}}},
                    }
                ]
            ),
            "driver nfs options ['share']",
        ),
        (service(CapabilityAdd=["CAP_SYS_ADMIN"]), "capabilities"),
        (service(Sysctls={"kernel.x": "1"}), "sysctls"),
        (service(Privileges={"SELinuxContext": {"Disable": True}}), "security-options"),
        (service(Privileges={"Seccomp": {"Mode": "unconfined"}}), "security-options"),
        (service(Privileges={"AppArmor": {"Mode": "disabled"}}), "security-options"),
        ({**SERVICE, "TaskTemplate": {"Runtime": "plugin", "PluginSpec": {"Name": "x"}}}, "plugin-management"),
        ({**SERVICE, "TaskTemplate": {**SERVICE["TaskTemplate"], "Networks": [{"Target": "host"}]}}, "namespaces"),
    ],
)
async def test_service_escalations(harness: Harness, tmp_path: Path, spec: dict[str, Any], kind: str) -> None:
    """A service's tasks start without API requests: its spec is checked like a container create."""
    await harness.add_volume("eng-known")
    harness.add_policy_lines(tmp_path, "p, role:eng, api, service.*\n")
    assert (await harness.ask("POST", "/services/create", body=SERVICE)).allow
    await harness.respond("POST", "/services/create", body=SERVICE, status=201, response={"ID": "a" * 25})
    for uri in ("/v1.41/services/create", f"/services/{'a' * 25}/update?version=3"):
        verdict = await harness.ask("POST", uri, body=spec)
        assert not verdict.allow and kind in verdict.message, verdict.message
    assert (await harness.ask("POST", "/services/create", user="", body=spec)).allow


async def test_service_mounting_existing_option_volume_is_an_escalation(
    real_harness: Harness, tmp_path: Path, other_driver: OtherDriver
) -> None:
    """A service whose tasks would mount an existing volume made with driver options (a `local` bind, another
    driver's share) by name is checked as a container create is; a plain volume is not an escalation."""
    harness = real_harness
    harness.add_policy_lines(tmp_path, "p, role:eng, api, service.*\n")
    hostroot = harness.real.volume("hostroot", "-d", "local", "-o", "type=none", "-o", "device=/", "-o", "o=bind")
    share = other_driver.volume(harness.real.dockerd, "share", "-o", "export=/")
    plain = harness.real.volume("plain")
    for name in (hostroot, share):
        spec = service(Mounts=[{"Type": "volume", "Source": name, "Target": "/h"}])
        verdict = await harness.ask("POST", "/services/create", body=spec)
        assert not verdict.allow and "volume-driver-bind" in verdict.message and name in verdict.message, verdict
    spec = service(Mounts=[{"Type": "volume", "Source": plain, "Target": "/h"}])
    assert (await harness.ask("POST", "/services/create", body=spec)).allow


async def test_services_belong_to_their_creator(harness: Harness, tmp_path: Path) -> None:
    """Only the creator (by ID, name or ID prefix) may inspect, update, remove or read logs of a service."""
    harness.add_policy_lines(tmp_path, "p, role:eng, api, service.*\n")
    sid = "k" * 25
    await harness.respond("POST", "/services/create", user="bob", body=SERVICE, status=201, response={"ID": sid})
    for method, uri in (("GET", f"/services/{sid}"), ("POST", "/services/web/update?version=1"),
                        ("GET", f"/services/{sid[:6]}/logs"), ("DELETE", "/services/web")):  # fmt: skip
        body = SERVICE if uri.endswith("version=1") else None
        assert (await harness.ask(method, uri, user="bob", body=body)).allow
        verdict = await harness.ask(method, uri, body=body)
        assert not verdict.allow and "bob's service" in verdict.message, verdict.message
    await harness.respond("DELETE", "/services/web", user="bob", status=200, response=b"")
    assert len(harness.ledger.services) == 0


async def test_service_spec_body_missing_is_denied(harness: Harness, tmp_path: Path) -> None:
    """A service create whose body was not forwarded (no JSON content type) is denied."""
    harness.add_policy_lines(tmp_path, "p, role:eng, api, service.*\n")
    verdict = await harness.ask("POST", "/services/create")
    assert not verdict.allow and "request body is missing" in verdict.message


@pytest.mark.parametrize(
    ("method", "uri"),
    [("GET", "/containers/json/../../../etc"), ("POST", "/v1.41/nosuchroute"), ("GET", "/v1.41/containers/x/json%"),
     ("PATCH", "/containers/x/json"), ("GET", "http://h")],
)  # fmt: skip
async def test_unknown_routes_denied_by_default(harness: Harness, method: str, uri: str) -> None:
    """A request no daemon route would run is denied, even to the admin."""
    verdict = await harness.ask(method, uri, user="")
    assert not verdict.allow and "not a known Docker API route" in verdict.message


async def test_form_bodies_denied(harness: Harness) -> None:
    """Form-encoded bodies are invisible to plugins but can set query parameters: denied."""
    request = harness.request("POST", "/containers/create", body={"Image": "x"})
    assert request.headers is not None
    request.headers["Content-Type"] = "application/x-www-form-urlencoded"
    verdict = await harness.authorizer.authorize_request(request)
    assert not verdict.allow and "form-encoded" in verdict.message


async def test_only_owners_are_recorded_by_the_id_in_the_create_response(harness: Harness) -> None:
    """The ledger holds the owner by the daemon's full ID, whatever status the response reports, and nothing
    else: names, restart policies and volumes are the daemon's to say."""
    body = create_body(RestartPolicy={"Name": "always"})
    for status, cid in ((201, A_ID), (0, B_ID)):
        assert (await harness.ask("POST", f"{CREATE}?name=n{status}", body=body)).allow
        await harness.respond("POST", f"{CREATE}?name=n{status}", body=body, status=status, response={"Id": cid})
        assert harness.ledger.get(cid) == ContainerRecord(id=cid, name=f"n{status}", owner="alice")
    for response in ({"message": "Conflict. The container name is already in use"}, {"Id": "a" * 12}, b"not json"):
        before = harness.ledger.ids()
        await harness.respond("POST", f"{CREATE}?name=x", body=body, status=0, response=response)
        assert harness.ledger.ids() == before
    assert harness.ledger.get("n201") is None and harness.ledger.get(A_ID[:12]) is None


@pytest.mark.parametrize("uri", [f"{CREATE}?name={'a' * 64}", f"{CREATE}?name=/{'0' * 64}",
                                 "/v1.41/containers/alices/rename?name=" + "b" * 64])  # fmt: skip
async def test_names_that_look_like_container_ids_are_refused(harness: Harness, uri: str) -> None:
    """A container named like a full ID could stand in for that ID where the daemon resolves names."""
    await harness.create_container("alice", "alices", A_ID)
    verdict = await harness.ask("POST", uri, body=create_body() if "create" in uri else None)
    assert not verdict.allow and "64 hexadecimal digits is what container IDs look like" in verdict.message


async def test_control_message_names_user_action_and_line(harness: Harness, tmp_path: Path) -> None:
    """The plugin-management denial is one sentence: who, which action on what, and the missing line."""
    harness.add_policy_lines(tmp_path, "p, role:eng, api, plugin.*\n")
    verdict = await harness.ask("POST", "/plugins/fixeduser-authz/disable")
    assert verdict.message == (
        "alice may not plugin.disable fixeduser-authz with its daemon-wide effect: escalation `plugin-management` "
        "needs `p, <alice or one of its roles>, escalation, plugin-management`"
    )


@pytest.mark.parametrize("written_as", ["-v and --mount", "-v", "--mount"])
async def test_binds_are_checked_again_at_every_start(harness: Harness, tmp_path: Path, written_as: str) -> None:
    """A granted bind whose folder is swapped for a link into a protected root after the create cannot be started
    (the daemon resolves binds again at each start); while it points where it did, starts are allowed."""
    shared = tmp_path / "shared"
    data = shared / "data"
    data.mkdir(parents=True)
    harness.add_policy_lines(tmp_path, f"p, alice, bind:{shared}/*, bind\n")
    binds = {
        "Binds": [f"{data}:/data"] if "-v" in written_as else [],
        "Mounts": [{"Type": "bind", "Source": str(data), "Target": "/m"}] if "--mount" in written_as else [],
    }
    body = create_body(**binds)
    await harness.create_container("alice", "binder", A_ID, body=body)
    start = f"/v1.41/containers/{A_ID}/start"
    assert (await harness.ask("POST", start)).allow
    data.rmdir()
    data.symlink_to(harness.protected)
    for action, method, uri in (("start", "POST", start), ("restart", "POST", "/v1.41/containers/binder/restart"),
                                ("archive.get", "GET", "/v1.41/containers/binder/archive?path=/data")):  # fmt: skip
        verdict = await harness.ask(method, uri)
        assert not verdict.allow, (action, verdict.message)
        assert f"alice may not {action} container binder now with bind {data}" in verdict.message, verdict.message
        assert "protected-bind" in verdict.message
    data.unlink()
    (tmp_path / "elsewhere").mkdir()
    data.symlink_to(tmp_path / "elsewhere")  # outside the grant, not protected: needs its own bind grant
    verdict = await harness.ask("POST", start)
    assert not verdict.allow and f"bind:{tmp_path / 'elsewhere'}, bind" in verdict.message, verdict.message


async def test_ledger_of_an_older_version_loads(tmp_path: Path) -> None:
    """A state file from before binds were recorded gains the column; its owners still count, by full ID."""
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute(
        "CREATE TABLE containers (id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, "
        "volumes TEXT NOT NULL, restart INTEGER NOT NULL, created REAL NOT NULL)"
    )
    db.execute("INSERT INTO containers VALUES (?, 'old', 'bob', '[\"v\"]', 1, 1.0)", (B_ID,))
    db.commit()
    db.close()
    store = StateStore(tmp_path / "state.db")
    ledger = ContainerLedger(store)
    assert ledger.get(B_ID) == ContainerRecord(id=B_ID, name="old", owner="bob") and ledger.get("old") is None
    await ledger.record(ContainerRecord(id=A_ID, name="new", owner="alice"))
    store.close()
    reloaded = ContainerLedger(StateStore(tmp_path / "state.db"))
    assert reloaded.get(A_ID) == ContainerRecord(id=A_ID, name="new", owner="alice")


async def test_a_start_the_daemon_cannot_describe_is_denied_saying_who_and_why(tmp_path: Path) -> None:
    """A container fixeduser never recorded, and a daemon that does not answer: its start is denied, never guessed."""
    client = DaemonClient(f"unix://{tmp_path}/no-daemon.sock")
    harness, store = make_harness(tmp_path, client)
    try:
        verdict = await harness.ask("POST", "/v1.41/containers/web/start")
        assert not verdict.allow
        assert verdict.message.startswith(
            "alice may not container.start: cannot ask the daemon which container 'web' is "
        )
        assert "cannot reach the Docker daemon" in verdict.message and "No such file or directory" in verdict.message
    finally:
        store.close()
        await client.close()


async def test_checkpoints_of_others_containers_are_off_limits(harness: Harness, tmp_path: Path) -> None:
    """With `api, checkpoint.*` granted, checkpoints of bob's container are still bob's: alice may not list, create
    or delete them; bob may."""
    harness.add_policy_lines(tmp_path, "p, role:eng, api, checkpoint.*\n")
    await harness.create_container("bob", "bobs", B_ID)
    for method, uri, body in (("GET", "/containers/bobs/checkpoints", None),
                              ("POST", "/v1.41/containers/bobs/checkpoints", {"CheckpointID": "cp1"}),
                              ("DELETE", f"/containers/{B_ID[:12]}/checkpoints/cp1", None)):  # fmt: skip
        verdict = await harness.ask(method, uri, body=body)
        assert not verdict.allow and "bob's container" in verdict.message, verdict.message
        assert (await harness.ask(method, uri, user="bob", body=body)).allow
