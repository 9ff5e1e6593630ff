"""Typed views of the request bodies the authorization plugin decides on.

Every model is built with :mod:`fixeduser.docker_api.gojson` so that it says what the daemon
will do with the body (Go field matching, merging and null rules), not what a case-sensitive
reading of the JSON would suggest. Anything the daemon would reject, or that we cannot read
unambiguously, raises :class:`BodyError`.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from fixeduser.docker_api.gojson import (
    BodyError,
    JsonObject,
    bool_field,
    decode,
    go_fold,
    key_set_field,
    list_of_str_field,
    obj_field,
    obj_list_field,
    opt_bool_field,
    opt_list_of_str_field,
    str_field,
    str_map_field,
)
from fixeduser.docker_api.routes import clean_path

__all__ = [
    "ENDPOINT_SYSCTLS_OPT",
    "MISSING_BODY",
    "Bind",
    "ContainerCreate",
    "ContainerSpec",
    "ExecCreate",
    "HostConfig",
    "MountSpec",
    "ServiceSpec",
    "VolumeCreate",
    "endpoint_sysctls",
    "parse_bind",
    "parse_container_create",
    "parse_create_response",
    "parse_exec_create",
    "parse_exec_create_response",
    "parse_service_create_response",
    "parse_service_spec",
    "parse_update_restart_policy",
    "parse_volume_create",
]

MISSING_BODY: Final = "request body is missing: the daemon forwards bodies only for JSON content up to 1 MiB"

_FROZEN = ConfigDict(frozen=True)


class Bind(BaseModel):
    """One ``HostConfig.Binds`` entry, parsed like the daemon's Linux ``-v`` parser."""

    model_config = _FROZEN

    source: str  # cleaned host path, volume name, or "" for an anonymous volume
    target: str  # cleaned container path
    mode: str
    kind: Literal["bind", "volume", "anonymous"]
    read_only: bool


MountType = Literal["bind", "volume", "tmpfs", "npipe", "cluster", "image", "unknown"]
_MOUNT_TYPES: Final = frozenset({"bind", "volume", "tmpfs", "npipe", "cluster", "image"})


class MountSpec(BaseModel):
    """One ``HostConfig.Mounts`` entry (``--mount``)."""

    model_config = _FROZEN

    type: MountType  # "unknown" for anything the daemon does not know (it rejects those)
    raw_type: str
    source: str
    target: str
    read_only: bool
    volume_driver: str  # VolumeOptions.DriverConfig.Name
    volume_driver_opts: dict[str, str]  # VolumeOptions.DriverConfig.Options
    volume_subpath: str  # VolumeOptions.Subpath (API 1.45+)
    volume_nocopy: bool
    bind_propagation: str  # BindOptions.Propagation
    bind_create_mountpoint: bool  # BindOptions.CreateMountpoint: daemon creates host path


class HostConfig(BaseModel):
    """The policy-relevant part of a container's HostConfig."""

    model_config = _FROZEN

    binds: list[Bind] = Field(default_factory=list)
    mounts: list[MountSpec] = Field(default_factory=list)
    volume_driver: str = ""
    volumes_from: list[str] = Field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    devices: list[dict[str, str]] = Field(default_factory=list)
    device_cgroup_rules: list[str] = Field(default_factory=list)
    device_requests: int = 0
    pid_mode: str = ""
    ipc_mode: str = ""
    network_mode: str = ""
    uts_mode: str = ""
    userns_mode: str = ""
    cgroupns_mode: str = ""
    cgroup: str = ""
    security_opt: list[str] = Field(default_factory=list)
    sysctls: dict[str, str] = Field(default_factory=dict)
    tmpfs: dict[str, str] = Field(default_factory=dict)
    group_add: list[str] = Field(default_factory=list)
    runtime: str = ""
    cgroup_parent: str = ""
    restart_policy: str = ""
    auto_remove: bool = False
    read_only_rootfs: bool = False
    oom_kill_disable: bool | None = None
    init: bool | None = None
    # None = daemon defaults; [] (e.g. from `--security-opt systempaths=unconfined`)
    # unmasks /proc and /sys paths in a non-privileged container.
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    links: list[str] = Field(default_factory=list)  # "container[:alias]"
    # API 1.40's HostConfig.Capabilities (a full capability set); None when absent or null.
    capabilities: list[str] | None = None


class ContainerCreate(BaseModel):
    """``POST /containers/create``: Config fields plus HostConfig."""

    model_config = _FROZEN

    image: str
    user: str
    volumes: list[str]  # Config.Volumes keys: anonymous volume targets
    host_config: HostConfig
    endpoint_links: list[str] = Field(default_factory=list)  # NetworkingConfig.EndpointsConfig.*.Links
    # NetworkingConfig.EndpointsConfig.<network>.DriverOpts[ENDPOINT_SYSCTLS_OPT], by network name
    endpoint_sysctls: dict[str, str] = Field(default_factory=dict)


class VolumeCreate(BaseModel):
    """``POST /volumes/create``."""

    model_config = _FROZEN

    name: str
    driver: str
    driver_opts: dict[str, str]
    labels: dict[str, str]


class ExecCreate(BaseModel):
    """``POST /containers/{name}/exec``."""

    model_config = _FROZEN

    user: str
    privileged: bool
    cmd: list[str]


def _object(body: bytes) -> JsonObject:
    if not body:
        raise BodyError(MISSING_BODY)
    value = decode(body)
    if not isinstance(value, JsonObject):
        raise BodyError("request body must be a JSON object")
    return value


# --- binds: daemon/volume/mounts/linux_parser.go semantics -------------------------------

_RW_MODES: Final = frozenset({"rw", "ro"})
_LABEL_MODES: Final = frozenset({"z", "Z"})
_PROPAGATION_MODES: Final = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared"})
_COPY_MODES: Final = frozenset({"nocopy"})
_CONSISTENCY_MODES: Final = frozenset({"consistent", "cached", "delegated"})
_MODE_GROUPS: Final = (_RW_MODES, _LABEL_MODES, _PROPAGATION_MODES, _COPY_MODES, _CONSISTENCY_MODES)
_VOLUME_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def _valid_mode(mode: str) -> bool:
    if not mode:
        return True
    counts = [0] * len(_MODE_GROUPS)
    for opt in mode.split(","):
        group = next((i for i, g in enumerate(_MODE_GROUPS) if opt in g), None)
        if group is None:
            return False
        counts[group] += 1
    return max(counts) <= 1


def _clean(p: str) -> str:
    """Go's ``path.Clean`` for an absolute path."""
    return clean_path(p).rstrip("/") or "/"


def _split_bind(spec: str) -> tuple[str, str, str]:
    """(source, target, mode) of a bind spec, like ``ParseMountRaw``'s SplitN."""
    parts = spec.split(":", 3)
    if not parts[0] or len(parts) > 3:
        raise BodyError(f"invalid bind specification: {spec!r}")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        if _valid_mode(parts[1]):  # "dst:mode": a volume needs a source to take a mode
            raise BodyError(f"invalid bind specification: {spec!r}")
        return parts[0], parts[1], ""
    return parts[0], parts[1], parts[2]


def parse_bind(spec: str) -> Bind:
    """Parse a ``src:dst[:mode]`` / ``dst`` bind spec; BodyError if the daemon rejects it."""
    source, target, mode = _split_bind(spec)
    if not _valid_mode(mode):
        raise BodyError(f"invalid bind mode {mode!r} in {spec!r}")
    if not target.startswith("/"):
        raise BodyError(f"invalid bind {spec!r}: target must be an absolute path")
    target = _clean(target)
    if target == "/":
        raise BodyError(f"invalid bind {spec!r}: target can't be '/'")
    opts = set(mode.split(",")) if mode else set()
    kind: Literal["bind", "volume", "anonymous"]
    if source.startswith("/"):
        kind, source = "bind", _clean(source)
        if "nocopy" in opts:
            raise BodyError(f"invalid bind {spec!r}: nocopy applies to volumes only")
    else:
        kind = "volume" if source else "anonymous"
        if opts & _PROPAGATION_MODES:
            raise BodyError(f"invalid bind {spec!r}: propagation applies to bind mounts only")
        if source and not _VOLUME_NAME.fullmatch(source):
            raise BodyError(f"invalid volume name {source!r} in {spec!r}")
    return Bind(source=source, target=target, mode=mode, kind=kind, read_only="ro" in opts)


def described_bind_sources(host_config: object) -> tuple[str, ...]:
    """The host paths a container bind-mounts (`-v /path:...` and `--mount type=bind`, as written), from its
    HostConfig as the daemon describes it (its own JSON, canonical, unlike a create body): its `Binds` read as a
    create's are, and its `Mounts` of type bind. BodyError if the description is not what the daemon writes.
    Reading the whole HostConfig like a create body took 210-308 µs of each start's decision
    (bench/NOTES.md#start-binds)."""
    if host_config is None:
        return ()
    if not isinstance(host_config, dict):
        raise BodyError("HostConfig is not an object")
    binds, mounts = host_config.get("Binds") or [], host_config.get("Mounts") or []
    if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
        raise BodyError("HostConfig.Binds is not a list of strings")
    if not isinstance(mounts, list) or not all(isinstance(m, dict) for m in mounts):
        raise BodyError("HostConfig.Mounts is not a list of objects")
    sources = [bind.source for bind in map(parse_bind, binds) if bind.kind == "bind"]
    for mount in mounts:
        if mount.get("Type") == "bind":
            source = mount.get("Source", "")
            if not isinstance(source, str):
                raise BodyError("a bind mount's Source is not a string")
            sources.append(_bind_mount_source(source))
    return tuple(sources)


def _bind_mount_source(source: str) -> str:
    """A `--mount type=bind` source as the daemon uses it: an absolute path cleaned, anything else as written."""
    return _clean(source) if source.startswith("/") else source


# --- container create --------------------------------------------------------------------

# HostConfig (and embedded Resources) fields, plus the wrapper's "Cpuset". Daemons up to at
# least 20.10 also read these at the top level of a create body (deprecated embedded
# *HostConfig, used when "HostConfig" is absent, VolumeDriver etc. merged in otherwise);
# newer daemons ignore them. No standard client sends them, so such a body is rejected.
_LEGACY_TOP_LEVEL: Final = frozenset(
    go_fold(n)
    for n in [
        "Binds",
        "ContainerIDFile",
        "LogConfig",
        "NetworkMode",
        "PortBindings",
        "RestartPolicy",
        "AutoRemove",
        "VolumeDriver",
        "VolumesFrom",
        "ConsoleSize",
        "Annotations",
        "CapAdd",
        "CapDrop",
        "Capabilities",
        "CgroupnsMode",
        "Dns",
        "DnsOptions",
        "DnsSearch",
        "ExtraHosts",
        "GroupAdd",
        "IpcMode",
        "Cgroup",
        "Links",
        "OomScoreAdj",
        "PidMode",
        "Privileged",
        "PublishAllPorts",
        "ReadonlyRootfs",
        "SecurityOpt",
        "StorageOpt",
        "Tmpfs",
        "UTSMode",
        "UsernsMode",
        "ShmSize",
        "Sysctls",
        "Runtime",
        "Isolation",
        "Mounts",
        "MaskedPaths",
        "ReadonlyPaths",
        "Init",
        "CpuShares",
        "Memory",
        "NanoCpus",
        "CgroupParent",
        "BlkioWeight",
        "BlkioWeightDevice",
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
        "CpuPeriod",
        "CpuQuota",
        "CpuRealtimePeriod",
        "CpuRealtimeRuntime",
        "CpusetCpus",
        "CpusetMems",
        "Devices",
        "DeviceCgroupRules",
        "DeviceRequests",
        "KernelMemory",
        "KernelMemoryTCP",
        "MemoryReservation",
        "MemorySwap",
        "MemorySwappiness",
        "OomKillDisable",
        "PidsLimit",
        "Ulimits",
        "CpuCount",
        "CpuPercent",
        "IOMaximumIOps",
        "IOMaximumBandwidth",
        "Cpuset",
    ]
)


def _mount(m: JsonObject) -> MountSpec:
    raw_type = str_field(m, "Type")
    mtype: MountType = raw_type if raw_type in _MOUNT_TYPES else "unknown"  # type: ignore[assignment]
    source, target = str_field(m, "Source"), str_field(m, "Target")
    if mtype == "bind":
        source = _bind_mount_source(source)
    if target.startswith("/"):
        target = _clean(target)
    vo = obj_field(m, "VolumeOptions") or JsonObject()
    dc = obj_field(vo, "DriverConfig") or JsonObject()
    bo = obj_field(m, "BindOptions") or JsonObject()
    return MountSpec(
        type=mtype,
        raw_type=raw_type,
        source=source,
        target=target,
        read_only=bool_field(m, "ReadOnly"),
        volume_driver=str_field(dc, "Name"),
        volume_driver_opts=str_map_field(dc, "Options"),
        volume_subpath=str_field(vo, "Subpath"),
        volume_nocopy=bool_field(vo, "NoCopy"),
        bind_propagation=str_field(bo, "Propagation"),
        bind_create_mountpoint=bool_field(bo, "CreateMountpoint"),
    )


def _device(d: JsonObject) -> dict[str, str]:
    keys = ("PathOnHost", "PathInContainer", "CgroupPermissions")
    return {k: str_field(d, k) for k in keys}


def _host_config(hc: JsonObject) -> HostConfig:
    restart = obj_field(hc, "RestartPolicy", pointer=False) or JsonObject()
    return HostConfig(
        binds=[parse_bind(b) for b in list_of_str_field(hc, "Binds")],
        mounts=[_mount(m) for m in obj_list_field(hc, "Mounts")],
        volume_driver=str_field(hc, "VolumeDriver"),
        volumes_from=list_of_str_field(hc, "VolumesFrom"),
        privileged=bool_field(hc, "Privileged"),
        cap_add=list_of_str_field(hc, "CapAdd", str_slice=True),
        cap_drop=list_of_str_field(hc, "CapDrop", str_slice=True),
        devices=[_device(d) for d in obj_list_field(hc, "Devices")],
        device_cgroup_rules=list_of_str_field(hc, "DeviceCgroupRules"),
        device_requests=len(obj_list_field(hc, "DeviceRequests")),
        pid_mode=str_field(hc, "PidMode"),
        ipc_mode=str_field(hc, "IpcMode"),
        network_mode=str_field(hc, "NetworkMode"),
        uts_mode=str_field(hc, "UTSMode"),
        userns_mode=str_field(hc, "UsernsMode"),
        cgroupns_mode=str_field(hc, "CgroupnsMode"),
        cgroup=str_field(hc, "Cgroup"),
        security_opt=list_of_str_field(hc, "SecurityOpt"),
        sysctls=str_map_field(hc, "Sysctls"),
        tmpfs=str_map_field(hc, "Tmpfs"),
        group_add=list_of_str_field(hc, "GroupAdd"),
        runtime=str_field(hc, "Runtime"),
        cgroup_parent=str_field(hc, "CgroupParent"),
        restart_policy=str_field(restart, "Name"),
        auto_remove=bool_field(hc, "AutoRemove"),
        read_only_rootfs=bool_field(hc, "ReadonlyRootfs"),
        oom_kill_disable=opt_bool_field(hc, "OomKillDisable"),
        init=opt_bool_field(hc, "Init"),
        masked_paths=opt_list_of_str_field(hc, "MaskedPaths"),
        readonly_paths=opt_list_of_str_field(hc, "ReadonlyPaths"),
        annotations=str_map_field(hc, "Annotations"),
        links=list_of_str_field(hc, "Links"),
        capabilities=opt_list_of_str_field(hc, "Capabilities"),
    )


# EndpointSettings.DriverOpts key whose value the daemon (API 1.46+) applies as interface sysctls.
ENDPOINT_SYSCTLS_OPT: Final = "com.docker.network.endpoint.sysctls"


def endpoint_sysctls(endpoint: JsonObject) -> str | None:
    """The per-endpoint sysctls an EndpointSettings (or a swarm network attachment) sets, if any."""
    return str_map_field(endpoint, "DriverOpts").get(ENDPOINT_SYSCTLS_OPT)


def _endpoints(top: JsonObject) -> list[tuple[str, JsonObject]]:
    """NetworkingConfig.EndpointsConfig as (network, settings), one entry per network name."""
    networking = obj_field(top, "NetworkingConfig") or JsonObject()
    endpoints = obj_field(networking, "EndpointsConfig") or JsonObject()
    # map[string]*EndpointSettings: keys are network names (data, not folded). Go replaces a repeated
    # key's value; merging the repeats instead keeps every setting any of them makes (stricter).
    merged: dict[str, list[tuple[str, object]]] = {}
    for name, value in endpoints.pairs:
        if value is None:
            merged[name] = []
            continue
        if not isinstance(value, JsonObject):
            raise BodyError(f"field 'EndpointsConfig[{name!r}]': expected an object")
        merged.setdefault(name, []).extend(value.pairs)
    return [(name, JsonObject(pairs)) for name, pairs in merged.items()]


def parse_container_create(body: bytes) -> ContainerCreate:
    """Parse a ``POST /containers/create`` body as the daemon reads it."""
    top = _object(body)
    legacy = sorted({k for k, _ in top.pairs if go_fold(k) in _LEGACY_TOP_LEVEL})
    if legacy:
        raise BodyError(
            f"HostConfig fields at the top level of the body ({', '.join(legacy)}): "
            "daemons differ on whether they apply; put them under HostConfig"
        )
    endpoints = _endpoints(top)
    sysctls = {name: value for name, settings in endpoints if (value := endpoint_sysctls(settings)) is not None}
    return ContainerCreate(
        image=str_field(top, "Image"),
        user=str_field(top, "User"),
        volumes=key_set_field(top, "Volumes"),
        host_config=_host_config(obj_field(top, "HostConfig") or JsonObject()),
        endpoint_links=[link for _, settings in endpoints for link in list_of_str_field(settings, "Links")],
        endpoint_sysctls=sysctls,
    )


def parse_update_restart_policy(body: bytes) -> str | None:
    """The restart policy name a ``POST /containers/{name}/update`` body sets; None if it sets none."""
    top = _object(body)
    restart = obj_field(top, "RestartPolicy", pointer=False)
    return None if restart is None else str_field(restart, "Name")


def parse_volume_create(body: bytes) -> VolumeCreate:
    """Parse a ``POST /volumes/create`` body."""
    top = _object(body)
    return VolumeCreate(
        name=str_field(top, "Name"),
        driver=str_field(top, "Driver"),
        driver_opts=str_map_field(top, "DriverOpts"),
        labels=str_map_field(top, "Labels"),
    )


def parse_exec_create(body: bytes) -> ExecCreate:
    """Parse a ``POST /containers/{name}/exec`` body."""
    top = _object(body)
    return ExecCreate(
        user=str_field(top, "User"),
        privileged=bool_field(top, "Privileged"),
        cmd=list_of_str_field(top, "Cmd"),
    )


CONTAINER_ID: Final = re.compile(r"[0-9a-f]{64}")  # a full container or exec ID, as the daemon makes them
_SWARM_ID: Final = re.compile(r"[0-9a-z]{25}")


def _response_id(body: bytes, key: str, pattern: re.Pattern[str], what: str) -> str:
    top = _object(body)
    value = str_field(top, key)
    if not pattern.fullmatch(value):
        raise BodyError(f"{what} response has no valid {key}: {value!r}")
    return value


def parse_create_response(body: bytes) -> str:
    """The container ID from a ``POST /containers/create`` response body."""
    return _response_id(body, "Id", CONTAINER_ID, "container create")


def parse_exec_create_response(body: bytes) -> str:
    """The exec ID from a ``POST /containers/{name}/exec`` response body (``{"Id": ...}``)."""
    return _response_id(body, "Id", CONTAINER_ID, "exec create")


def parse_service_create_response(body: bytes) -> str:
    """The service ID from a ``POST /services/create`` response body (``{"ID": ...}``)."""
    return _response_id(body, "ID", _SWARM_ID, "service create")


# --- swarm services ----------------------------------------------------------------------


class ContainerSpec(BaseModel):
    """The policy-relevant part of a service's ``TaskTemplate.ContainerSpec``."""

    model_config = _FROZEN

    mounts: list[MountSpec] = Field(default_factory=list)
    cap_add: list[str] = Field(default_factory=list)
    sysctls: dict[str, str] = Field(default_factory=dict)
    # Privileges that loosen confinement, as "name=value" (e.g. "seccomp=unconfined").
    loosened: list[str] = Field(default_factory=list)


class ServiceSpec(BaseModel):
    """``POST /services/create`` and ``POST /services/{id}/update`` bodies (swarm.ServiceSpec)."""

    model_config = _FROZEN

    name: str
    runtime: str  # TaskTemplate.Runtime: "" / "container", "plugin", "attachment"
    has_plugin_spec: bool
    container: ContainerSpec | None
    networks: list[str]  # TaskTemplate.Networks[].Target and the deprecated Spec.Networks[].Target
    # The same attachments' DriverOpts[ENDPOINT_SYSCTLS_OPT]: the executor makes them endpoint options.
    endpoint_sysctls: dict[str, str] = Field(default_factory=dict)


def _loosened_privileges(privileges: JsonObject) -> list[str]:
    out: list[str] = []
    selinux = obj_field(privileges, "SELinuxContext")
    if selinux is not None and bool_field(selinux, "Disable"):
        out.append("selinux=disable")
    for name, safe in (("Seccomp", ("", "default")), ("AppArmor", ("", "default"))):
        section = obj_field(privileges, name)
        mode = str_field(section, "Mode") if section is not None else ""
        if mode not in safe:
            out.append(f"{name.lower()}={mode}")
    if obj_field(privileges, "CredentialSpec") is not None:
        out.append("credentialspec")
    return out


def _container_spec(cs: JsonObject) -> ContainerSpec:
    privileges = obj_field(cs, "Privileges") or JsonObject()
    return ContainerSpec(
        mounts=[_mount(m) for m in obj_list_field(cs, "Mounts")],
        cap_add=list_of_str_field(cs, "CapabilityAdd"),
        sysctls=str_map_field(cs, "Sysctls"),
        loosened=_loosened_privileges(privileges),
    )


def parse_service_spec(body: bytes) -> ServiceSpec:
    """Parse a service create/update body as the daemon (swarmkit) reads it."""
    top = _object(body)
    task = obj_field(top, "TaskTemplate", pointer=False) or JsonObject()
    container = obj_field(task, "ContainerSpec")
    attachments = [*obj_list_field(task, "Networks"), *obj_list_field(top, "Networks")]
    sysctls = {str_field(n, "Target"): value for n in attachments if (value := endpoint_sysctls(n)) is not None}
    return ServiceSpec(
        name=str_field(top, "Name"),
        runtime=str_field(task, "Runtime"),
        has_plugin_spec=obj_field(task, "PluginSpec") is not None,
        container=_container_spec(container) if container is not None else None,
        networks=[str_field(n, "Target") for n in attachments],
        endpoint_sysctls=sysctls,
    )
