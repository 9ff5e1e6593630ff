"""Request body models: what the daemon will do with a create/exec/volume body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixeduser.docker_api import (
    MISSING_BODY,
    Bind,
    BodyError,
    described_bind_sources,
    parse_bind,
    parse_container_create,
    parse_create_response,
    parse_exec_create,
    parse_exec_create_response,
    parse_service_create_response,
    parse_service_spec,
    parse_update_restart_policy,
    parse_volume_create,
)

CID = "4f2b0c2e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"


def create(text: str) -> Any:
    return parse_container_create(text.encode())


def hc(host_config: dict[str, Any]) -> Any:
    body = json.dumps({"Image": "busybox:local", "HostConfig": host_config}).encode()
    return parse_container_create(body).host_config


# --- binds -------------------------------------------------------------------------------


def bind(source: str, target: str, mode: str, kind: Any, read_only: bool) -> Bind:
    return Bind(source=source, target=target, mode=mode, kind=kind, read_only=read_only)


BIND_ROWS: list[tuple[str, Bind]] = [
    ("/data", bind("", "/data", "", "anonymous", False)),
    ("vol1:/data", bind("vol1", "/data", "", "volume", False)),
    ("vol1:/data:ro", bind("vol1", "/data", "ro", "volume", True)),
    ("vol1:/data:nocopy", bind("vol1", "/data", "nocopy", "volume", False)),
    ("v.1_x-y:/d:ro,z", bind("v.1_x-y", "/d", "ro,z", "volume", True)),
    ("/srv:/mnt", bind("/srv", "/mnt", "", "bind", False)),
    ("/srv:/mnt:rw", bind("/srv", "/mnt", "rw", "bind", False)),
    ("/srv:/mnt:ro,Z,rshared", bind("/srv", "/mnt", "ro,Z,rshared", "bind", True)),
    ("/:/host", bind("/", "/host", "", "bind", False)),
    ("/srv/../etc/:/mnt//x/", bind("/etc", "/mnt/x", "", "bind", False)),
    ("/srv:/mnt:delegated", bind("/srv", "/mnt", "delegated", "bind", False)),
]


@pytest.mark.parametrize(("spec", "expected"), BIND_ROWS)
def test_parse_bind(spec: str, expected: Bind) -> None:
    """Valid -v specs parse like the daemon's Linux parser."""
    assert parse_bind(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        ":/data",
        "vol1:",
        "/data:ro",  # dst:mode has no source
        "/data:rw",
        "a:b:c:d",
        "vol1:/data:rx",
        "vol1:/data:ro,rw",  # two rw modes
        "vol1:/data:z,Z",
        "vol1:data",  # relative target
        "vol1:/",  # target is root
        "vol1:/x/..",  # target cleans to root
        "v:/data",  # one-character volume name
        "_vol:/data",
        "./rel:/data",
        "rel/path:/data",
        "~/x:/data",
        "vol1:/data:shared",  # propagation is for binds
        "/srv:/mnt:nocopy",  # nocopy is for volumes
        "relative",  # anonymous volume target must be absolute
    ],
)
def test_parse_bind_invalid(spec: str) -> None:
    """Specs the daemon rejects are BodyErrors."""
    with pytest.raises(BodyError):
        parse_bind(spec)


# --- container create --------------------------------------------------------------------


def test_create_typical_cli_body() -> None:
    """A docker-run style body yields its image, user, volumes and host config."""
    body = {
        "Image": "busybox:local",
        "User": "1000:1000",
        "Volumes": {"/anon": {}},
        "Cmd": ["id"],
        "HostConfig": {
            "Binds": ["vol1:/data:ro", "/srv/share:/share"],
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": "v2",
                    "Target": "/v2",
                    "VolumeOptions": {
                        "DriverConfig": {"Name": "fixeduser", "Options": {"uid": "1000"}},
                        "Subpath": "sub",
                    },
                },
                {
                    "Type": "bind",
                    "Source": "/srv/x/",
                    "Target": "/x",
                    "ReadOnly": True,
                    "BindOptions": {"Propagation": "rslave", "CreateMountpoint": True},
                },
            ],
            "VolumeDriver": "fixeduser",
            "VolumesFrom": ["other:ro"],
            "CapAdd": ["NET_ADMIN"],
            "CapDrop": "ALL",
            "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse"}],
            "DeviceCgroupRules": ["c 10:229 rwm"],
            "DeviceRequests": [{"Count": -1}],
            "PidMode": "host",
            "IpcMode": "shareable",
            "NetworkMode": "none",
            "UTSMode": "host",
            "UsernsMode": "host",
            "CgroupnsMode": "private",
            "SecurityOpt": ["apparmor=unconfined"],
            "Sysctls": {"net.ipv4.ip_forward": "1"},
            "Runtime": "runc",
            "CgroupParent": "/x",
            "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
            "AutoRemove": True,
            "ReadonlyRootfs": True,
            "OomKillDisable": True,
            "Init": False,
            "MaskedPaths": [],
            "GroupAdd": ["disk"],
            "Tmpfs": {"/run": "rw"},
        },
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    got = parse_container_create(json.dumps(body).encode())
    assert (got.image, got.user, got.volumes) == ("busybox:local", "1000:1000", ["/anon"])
    h = got.host_config
    assert [b.kind for b in h.binds] == ["volume", "bind"]
    vol, bind = h.mounts
    assert (vol.type, vol.source, vol.volume_driver, vol.volume_driver_opts) == (
        "volume",
        "v2",
        "fixeduser",
        {"uid": "1000"},
    )
    assert vol.volume_subpath == "sub"
    assert (bind.source, bind.read_only, bind.bind_propagation) == ("/srv/x", True, "rslave")
    assert bind.bind_create_mountpoint is True
    assert h.volume_driver == "fixeduser"
    assert h.volumes_from == ["other:ro"]
    assert (h.cap_add, h.cap_drop) == (["NET_ADMIN"], ["ALL"])
    assert h.devices == [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": ""}]
    assert h.device_cgroup_rules == ["c 10:229 rwm"]
    assert h.device_requests == 1
    assert (h.pid_mode, h.ipc_mode, h.network_mode, h.uts_mode) == (
        "host",
        "shareable",
        "none",
        "host",
    )
    assert (h.userns_mode, h.cgroupns_mode) == ("host", "private")
    assert h.security_opt == ["apparmor=unconfined"]
    assert h.sysctls == {"net.ipv4.ip_forward": "1"}
    assert (h.runtime, h.cgroup_parent, h.restart_policy) == ("runc", "/x", "always")
    assert (h.auto_remove, h.read_only_rootfs, h.oom_kill_disable, h.init) == (
        True,
        True,
        True,
        False,
    )
    assert h.masked_paths == []
    assert h.readonly_paths is None
    assert h.group_add == ["disk"]
    assert h.tmpfs == {"/run": "rw"}


def test_create_without_host_config() -> None:
    """A body without HostConfig has default host settings."""
    got = create('{"Image": "x"}')
    assert got.host_config.privileged is False
    assert got.host_config.binds == []
    assert got.volumes == []


@pytest.mark.parametrize(
    ("text", "privileged"),
    [
        ('{"HostConfig": {"Privileged": true}}', True),
        ('{"hostconfig": {"privileged": true}}', True),
        ('{"HOSTCONFIG": {"PRIVILEGED": true}}', True),
        ('{"HostConfig": {"Privileged": false, "privileged": true}}', True),
        ('{"HostConfig": {"privileged": true, "Privileged": false}}', False),
        ('{"HostConfig": {"Privileged": true, "privileged": null}}', True),
        ('{"HostConfig": {"Priv\\u0131leged": true}}', False),
        ('{"HostConfig": {"Privileged": true}, "HostConfig": {"CapAdd": []}}', True),
        ('{"HostConfig": {"Privileged": true}, "hostConfig": null}', False),
        ('{"HostConfig": {"Privileged": true}, "hostConfig": {"privileged": false}}', False),
    ],
)
def test_create_privileged_case_folding(text: str, privileged: bool) -> None:
    """Privileged is read with Go's folding, last-key-wins, merging and null rules."""
    assert create(text).host_config.privileged is privileged


def test_create_long_s_security_opt() -> None:
    """'\u017fecurityOpt' (long s) is SecurityOpt to Go."""
    got = create('{"HostConfig": {"\\u017fecurityOpt": ["seccomp=unconfined"]}}')
    assert got.host_config.security_opt == ["seccomp=unconfined"]


def test_create_kelvin_sign_field() -> None:
    """A Kelvin sign folds to 'k', so 'Loc\u212aed' style keys match too."""
    got = create('{"HostConfig": {"Network\\u212aode": "host", "NetworkMode": "none"}}')
    assert got.host_config.network_mode == "none"  # no such field: the K is not an M
    got = create('{"HostConfig": {"\\u212aernelMemory": 1, "Privileged": true}}')
    assert got.host_config.privileged is True


def test_create_restart_policy_null_keeps_value() -> None:
    """RestartPolicy is a value struct: a later null does not clear it."""
    text = '{"HostConfig": {"RestartPolicy": {"Name": "always"}, "restartpolicy": null}}'
    assert create(text).host_config.restart_policy == "always"


def test_create_binds_case_folded_and_last_wins() -> None:
    """The last Binds key (any case) is the one the daemon uses."""
    text = '{"HostConfig": {"Binds": ["/:/host"], "binds": ["vol1:/data"]}}'
    assert [b.source for b in create(text).host_config.binds] == ["vol1"]


def test_create_volume_driver_in_mount_is_folded() -> None:
    """Nested Mount fields fold too: volumeoptions.driverconfig.name."""
    text = (
        '{"HostConfig": {"mounts": [{"type": "volume", "source": "v", "target": "/v",'
        ' "volumeoptions": {"driverconfig": {"name": "evil", "options": {"Dev": "/"}}}}]}}'
    )
    (mount,) = create(text).host_config.mounts
    assert (mount.volume_driver, mount.volume_driver_opts) == ("evil", {"Dev": "/"})


def test_create_unknown_mount_type() -> None:
    """An unknown mount type is 'unknown', raw_type keeps what was sent."""
    (mount,) = create('{"HostConfig": {"Mounts": [{"Type": "BIND"}]}}').host_config.mounts
    assert (mount.type, mount.raw_type) == ("unknown", "BIND")


def test_create_labels_map_keys_not_folded() -> None:
    """Sysctls keys are data: different cases are different keys."""
    text = '{"HostConfig": {"Sysctls": {"kernel.x": "1", "KERNEL.X": "2"}}}'
    assert create(text).host_config.sysctls == {"kernel.x": "1", "KERNEL.X": "2"}


@pytest.mark.parametrize(
    "text",
    [
        '{"HostConfig": {"Privileged": "true"}}',
        '{"HostConfig": {"Privileged": 1}}',
        '{"HostConfig": {"Binds": "vol1:/data"}}',
        '{"HostConfig": {"Binds": ["bad:spec:x:y"]}}',
        '{"HostConfig": {"CapAdd": [1]}}',
        '{"HostConfig": {"Sysctls": {"a": 1}}}',
        '{"HostConfig": {"Mounts": {"Type": "bind"}}}',
        '{"HostConfig": {"Mounts": [{"ReadOnly": "yes"}]}}',
        '{"HostConfig": {"Mounts": [{"VolumeOptions": {"DriverConfig": {"Options": []}}}]}}',
        '{"HostConfig": {"Mounts": [{"Type": "bind"}], "mounts": [{"Source": "/"}]}}',
        '{"HostConfig": {"Binds": ["vol1:/x"], "binds": [null]}}',
        '{"HostConfig": {"RestartPolicy": "always"}}',
        '{"HostConfig": {"Init": "no"}}',
        '{"HostConfig": []}',
        '{"Image": 5}',
        '{"User": ["root"]}',
        '{"Volumes": ["/data"]}',
        '{"HostConfig": {"Privileged": NaN}}',
        "[]",
        "null",
        '"x"',
        '{"Image": "x"} {"HostConfig": {"Privileged": true}}',
    ],
)
def test_create_rejects(text: str) -> None:
    """Bodies the daemon would reject, or that we cannot read unambiguously, raise."""
    with pytest.raises(BodyError):
        create(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"Image": "x", "Privileged": true}',
        '{"Image": "x", "binds": ["/:/host"]}',
        '{"Image": "x", "HostConfig": {}, "VolumeDriver": "evil"}',
        '{"Image": "x", "\\u017fecurityOpt": []}',
        '{"Image": "x", "Cpuset": "0"}',
    ],
)
def test_create_rejects_top_level_host_config_fields(text: str) -> None:
    """Deprecated top-level HostConfig fields (honoured by 20.10) are refused."""
    with pytest.raises(BodyError, match="top level"):
        create(text)


def test_create_missing_body() -> None:
    """An empty body is reported as missing (the daemon did not forward it)."""
    with pytest.raises(BodyError, match="request body is missing") as info:
        parse_container_create(b"")
    assert str(info.value) == MISSING_BODY


# --- volume create, exec create, create response -----------------------------------------


def test_volume_create() -> None:
    """Name, Driver, DriverOpts and Labels are read with folding; map keys kept."""
    body = b'{"name": "v1", "Driver": "local", "DriverOpts": {"type": "none", "o": "bind",'
    body += b' "device": "/etc"}, "Labels": {"a": "b"}}'
    got = parse_volume_create(body)
    assert (got.name, got.driver, got.labels) == ("v1", "local", {"a": "b"})
    assert got.driver_opts == {"type": "none", "o": "bind", "device": "/etc"}


def test_volume_create_merges_driver_opts() -> None:
    """DriverOpts given twice merge, as Go decodes into the same map."""
    got = parse_volume_create(b'{"DriverOpts": {"a": "1"}, "driveropts": {"device": "/"}}')
    assert got.driver_opts == {"a": "1", "device": "/"}


@pytest.mark.parametrize("body", [b"", b'{"Name": 1}', b'{"DriverOpts": {"x": 1}}', b'{"Labels": []}', b"[]"])
def test_volume_create_rejects(body: bytes) -> None:
    """Invalid volume create bodies raise BodyError."""
    with pytest.raises(BodyError):
        parse_volume_create(body)


def test_exec_create() -> None:
    """User, Privileged and Cmd are read with Go semantics."""
    got = parse_exec_create(b'{"user": "0", "PRIVILEGED": true, "Cmd": ["sh", "-c", "id"]}')
    assert (got.user, got.privileged, got.cmd) == ("0", True, ["sh", "-c", "id"])
    got = parse_exec_create(b'{"User": "1000", "user": null}')
    assert (got.user, got.privileged, got.cmd) == ("1000", False, [])


@pytest.mark.parametrize("body", [b"", b'{"User": 0}', b'{"Privileged": "yes"}', b'{"Cmd": [1]}', b"{"])
def test_exec_create_rejects(body: bytes) -> None:
    """Invalid exec create bodies raise BodyError."""
    with pytest.raises(BodyError):
        parse_exec_create(body)


def test_create_response() -> None:
    """The container ID comes from the create response's Id."""
    assert parse_create_response(f'{{"Id": "{CID}", "Warnings": []}}'.encode()) == CID


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"Warnings": []}',
        b'{"Id": "abc"}',
        b'{"Id": 5}',
        f'{{"Id": "{CID.upper()}"}}'.encode(),
        f'{{"Id": "{CID}x"}}'.encode(),
        b'{"message": "No such image"}',
    ],
)
def test_create_response_rejects(body: bytes) -> None:
    """A response without a 64-hex Id raises BodyError."""
    with pytest.raises(BodyError):
        parse_create_response(body)


# --- additions for issue 3: links, Capabilities, services, responses, update --------------------


def test_create_links_and_endpoint_links() -> None:
    """HostConfig.Links and NetworkingConfig.EndpointsConfig.*.Links are both read (keys folded)."""
    got = create(
        '{"HostConfig": {"links": ["a:b"]}, "networkingconfig": {"EndpointsConfig": {"n1": {"LINKS": ["c"]},'
        ' "n2": null, "n3": {"Links": ["d:e"]}}}}'
    )
    assert got.host_config.links == ["a:b"] and got.endpoint_links == ["c", "d:e"]


def test_create_capabilities_field() -> None:
    """API 1.40's HostConfig.Capabilities: absent or null is None, a list (even empty) is kept."""
    assert hc({}).capabilities is None
    assert hc({"Capabilities": None}).capabilities is None
    assert hc({"capabilities": []}).capabilities == []
    with pytest.raises(BodyError):
        create('{"Capabilities": ["CAP_SYS_ADMIN"]}')  # deprecated top-level placement


def test_service_spec() -> None:
    """Mounts, capabilities, sysctls, loosened privileges, runtime and networks of a service spec."""
    body = {
        "Name": "web",
        "TaskTemplate": {
            "containerspec": {
                "Mounts": [{"Type": "bind", "Source": "/srv/../etc", "Target": "/e"}],
                "CapabilityAdd": ["CAP_NET_ADMIN"],
                "Sysctls": {"net.x": "1"},
                "Privileges": {"SELinuxContext": {"Disable": True}, "Seccomp": {"Mode": "unconfined"},
                               "AppArmor": {"Mode": "default"}},
            },
            "Networks": [{"Target": "host"}],
        },
        "Networks": [{"Target": "overlay1"}],
    }  # fmt: skip
    spec = parse_service_spec(json.dumps(body).encode())
    assert spec.name == "web" and spec.runtime == "" and not spec.has_plugin_spec
    assert spec.container is not None
    assert [(m.type, m.source) for m in spec.container.mounts] == [("bind", "/etc")]
    assert spec.container.cap_add == ["CAP_NET_ADMIN"] and spec.container.sysctls == {"net.x": "1"}
    assert spec.container.loosened == ["selinux=disable", "seccomp=unconfined"]
    assert spec.networks == ["host", "overlay1"]
    plugin = parse_service_spec(b'{"TaskTemplate": {"Runtime": "plugin", "PluginSpec": {"Name": "x"}}}')
    assert plugin.runtime == "plugin" and plugin.has_plugin_spec and plugin.container is None


@pytest.mark.parametrize("body", [b"", b"[]", b'{"TaskTemplate": {"ContainerSpec": {"Mounts": {}}}}'])
def test_service_spec_rejects(body: bytes) -> None:
    """Missing or mistyped service bodies raise BodyError."""
    with pytest.raises(BodyError):
        parse_service_spec(body)


def test_exec_and_service_create_responses() -> None:
    """The exec ID (64 hex, key Id) and service ID (25 base36, key ID) are read and validated."""
    assert parse_exec_create_response(json.dumps({"Id": CID}).encode()) == CID
    assert parse_service_create_response(b'{"ID": "ozpl1ub2pe5j4xcn9ux8r3u4o"}') == "ozpl1ub2pe5j4xcn9ux8r3u4o"
    for bad in (b"{}", b'{"Id": "x"}', b""):
        with pytest.raises(BodyError):
            parse_exec_create_response(bad)
    with pytest.raises(BodyError):
        parse_service_create_response(b'{"ID": "../x"}')


def test_update_restart_policy() -> None:
    """A container update body sets a restart policy only when it carries RestartPolicy."""
    assert parse_update_restart_policy(b'{"Memory": 1}') is None
    assert parse_update_restart_policy(b'{"restartpolicy": {"Name": "always"}}') == "always"
    assert (
        parse_update_restart_policy(b'{"RestartPolicy": {"Name": "always"}, "RestartPolicy": {"name": "no"}}') == "no"
    )


# --- no side doors: annotations and per-endpoint sysctls ------------------------------------------

SYSCTLS_OPT = "com.docker.network.endpoint.sysctls"


@pytest.mark.parametrize(
    ("text", "annotations"),
    [
        ('{"HostConfig": {"Annotations": {"org.systemd.property.DeviceAllow": "char-* rwm"}}}',
         {"org.systemd.property.DeviceAllow": "char-* rwm"}),
        ('{"hostconfig": {"annotations": {"a": "1"}}}', {"a": "1"}),
        ('{"HOSTCONFIG": {"ANNOTATIONS": {"A": "1"}}}', {"A": "1"}),  # keys of the map are data: not folded
        ('{"HostConfig": {"Annotation\u017f": {"x": "y"}}}', {"x": "y"}),  # Go's Unicode folding
        ('{"HostConfig": {"Annotations": {"a": "1"}, "annotations": {"b": "2"}}}', {"a": "1", "b": "2"}),  # merged
        ('{"HostConfig": {"Annotations": {"a": "1"}, "annotations": null}}', {}),  # null resets the map
        ('{"HostConfig": {"Annotations": {"a": null}}}', {"a": ""}),
        ('{"HostConfig": {"Annotations": {}}}', {}),
        ('{"HostConfig": {"Annotations": null}}', {}),
    ],
)  # fmt: skip
def test_create_annotations_read_like_go(text: str, annotations: dict[str, str]) -> None:
    assert create(text).host_config.annotations == annotations


def test_create_annotations_of_the_wrong_type_or_place_are_rejected() -> None:
    with pytest.raises(BodyError):
        create('{"HostConfig": {"Annotations": ["a=1"]}}')
    with pytest.raises(BodyError):
        create('{"Annotations": {"a": "1"}}')  # deprecated top-level HostConfig placement


@pytest.mark.parametrize(
    ("endpoints", "sysctls"),
    [
        ({"n1": {"DriverOpts": {SYSCTLS_OPT: "net.ipv4.conf.IFNAME.forwarding=1"}}},
         {"n1": "net.ipv4.conf.IFNAME.forwarding=1"}),
        ({"n1": {"driveropts": {SYSCTLS_OPT: ""}}}, {"n1": ""}),  # present even when empty
        ({"n1": {"DriverOpts": {SYSCTLS_OPT.upper(): "x"}}}, {}),  # map keys are not folded: not the option
        ({"n1": {"DriverOpts": {"com.docker.network.endpoint.ifname": "eth7"}}}, {}),
        ({"n1": {"DriverOpts": {SYSCTLS_OPT: "a"}, "driverOpts": {SYSCTLS_OPT: "b"}}}, {"n1": "b"}),  # last wins
        ({"n1": None, "n2": {"DriverOpts": {SYSCTLS_OPT: "x"}}}, {"n2": "x"}),
        ({"n1": {"DriverOpts": {SYSCTLS_OPT: "x"}, "DriverOpts ": {}}}, {"n1": "x"}),  # "DriverOpts " is no field
    ],
)  # fmt: skip
def test_create_endpoint_sysctls(endpoints: dict[str, Any], sysctls: dict[str, str]) -> None:
    body = {"Image": "x", "NetworkingConfig": {"EndpointsConfig": endpoints}}
    assert parse_container_create(json.dumps(body).encode()).endpoint_sysctls == sysctls


def test_create_endpoint_sysctls_in_a_repeated_network_key_are_kept() -> None:
    """Go replaces a repeated map key's value; the parser keeps what any repeat sets (stricter)."""
    text = (
        '{"NetworkingConfig": {"EndpointsConfig": {"n1": {"DriverOpts": {"' + SYSCTLS_OPT + '": "x"}},'
        ' "n1": {"Aliases": ["a"]}}}}'
    )
    assert create(text).endpoint_sysctls == {"n1": "x"}


def test_service_spec_endpoint_sysctls() -> None:
    """A service's network attachments (TaskTemplate.Networks and the deprecated Spec.Networks) carry DriverOpts."""
    body = {
        "Name": "web",
        "TaskTemplate": {"ContainerSpec": {"Image": "x"},
                         "networks": [{"Target": "n1", "DriverOpts": {SYSCTLS_OPT: "a"}}, {"Target": "n2"}]},
        "Networks": [{"target": "n3", "driveropts": {SYSCTLS_OPT: "b"}}],
    }  # fmt: skip
    spec = parse_service_spec(json.dumps(body).encode())
    assert spec.endpoint_sysctls == {"n1": "a", "n3": "b"} and spec.networks == ["n1", "n2", "n3"]


_DESCRIBED_HOST_CONFIGS = [
    None,
    {},
    {"Binds": None, "Mounts": None},
    {"Binds": ["vol:/data", "/srv/a/../b:/b:ro", "/srv/c:/c:rw,rslave"], "Mounts": []},
    {"Mounts": [{"Type": "bind", "Source": "/srv//m/", "Target": "/m"},
                {"Type": "volume", "Source": "v", "Target": "/v"},
                {"Type": "tmpfs", "Target": "/t"}, {"Type": "bind", "Source": "relative", "Target": "/r"}]},
    {"Binds": ["/x:/x"], "Mounts": [{"Type": "bind", "Source": "/y", "Target": "/y"}], "Privileged": True},
]  # fmt: skip


@pytest.mark.parametrize("host_config", _DESCRIBED_HOST_CONFIGS)
def test_described_binds_are_the_ones_a_create_body_with_that_host_config_has(host_config: object) -> None:
    """The start check reads only the bind fields of the daemon's description, with the create parser's rules."""
    create = parse_container_create(json.dumps({"HostConfig": host_config or {}}).encode()).host_config
    binds = [b.source for b in create.binds if b.kind == "bind"]
    assert described_bind_sources(host_config) == (*binds, *(m.source for m in create.mounts if m.type == "bind"))


@pytest.mark.parametrize(
    "host_config",
    [[], {"Binds": "/x:/x"}, {"Binds": [1]}, {"Mounts": ["/x"]}, {"Mounts": [{"Type": "bind", "Source": 1}]},
     {"Binds": ["/x:relative"]}],
)  # fmt: skip
def test_a_description_the_daemon_would_not_write_is_an_error(host_config: object) -> None:
    with pytest.raises(BodyError):
        described_bind_sources(host_config)
