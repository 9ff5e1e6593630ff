"""What in a container or exec create could reach the host or storage outside the fixed-user path.

Each finding names a class; the policy grants a class with `p, <subject>, escalation, <class>`,
and a host path with `p, <subject>, bind:<path pattern>, bind`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from fixeduser.clipping import clip
from fixeduser.docker_api import ContainerCreate, ExecCreate, MountSpec, ServiceSpec
from fixeduser.policy.route_decisions import route_decisions_markdown

ESCALATION_OBJECT = "escalation"
NAMESPACE_MODES = ("pid_mode", "ipc_mode", "uts_mode", "userns_mode", "cgroupns_mode", "network_mode", "cgroup")
# Values of each namespace field that keep the container in namespaces of its own.
SAFE_NAMESPACE_VALUES = {
    "pid_mode": frozenset({""}),
    "ipc_mode": frozenset({"", "none", "private", "shareable"}),
    "uts_mode": frozenset({""}),
    "userns_mode": frozenset({""}),
    "cgroupns_mode": frozenset({"", "private"}),
    "cgroup": frozenset({""}),
}
SAFE_SECURITY_OPTS = frozenset({"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"})
# Folders where the daemon discovers plugins (a bind there can replace fixeduser's socket) and
# the daemon's own socket: protected whatever the deployment passes in.
BUILTIN_PROTECTED = (
    Path("/run/docker/plugins"),
    Path("/etc/docker/plugins"),
    Path("/usr/lib/docker/plugins"),
    Path("/run/docker.sock"),
    Path("/var/run/docker.sock"),
    Path("/var/lib/docker"),  # the default data root: every container's files and every local volume
)


class EscalationClass(BaseModel):
    model_config = ConfigDict(frozen=True)

    description: str
    grant: str = ""  # the policy line that grants it, when it is not `p, X, escalation, <class>`


# docs/escalations.md is generated from this table (tests/authz/test_escalations_doc.py checks).
CLASSES: dict[str, EscalationClass] = {
    "privileged": EscalationClass(description="privileged mode (`--privileged`)"),
    "capabilities": EscalationClass(
        description="added capabilities (`--cap-add`, `HostConfig.Capabilities`, a service's `CapabilityAdd`)"
    ),
    "devices": EscalationClass(
        description="host devices, device cgroup rules or device requests (`--device`, `--gpus`)"
    ),
    "namespaces": EscalationClass(
        description="host namespaces or those of a container you do not own "
        "(`--pid/--ipc/--uts/--userns/--cgroupns/--network host`, `container:X`, a service on the host network; "
        "the host network named by ID or ID prefix too, resolved by asking the daemon)"
    ),
    "links": EscalationClass(description="a link to a container you do not own (`--link`: exposes its environment)"),
    "security-options": EscalationClass(
        description="security options that change confinement (`--security-opt` other than no-new-privileges, "
        "`systempaths=unconfined`, a service's loosened `Privileges`)"
    ),
    "bind": EscalationClass(
        description="a bind mount of a host path (`-v /path:...`, `--mount type=bind`), checked on the path "
        "with symlinks and `..` resolved",
        grant="p, <subject>, bind:<path pattern>, bind",
    ),
    "protected-bind": EscalationClass(
        description="a bind mount reaching fixeduser's state, storage, mount or policy folders, the plugin "
        "sockets, the Docker socket or the default Docker data root"
    ),
    "volume-driver-bind": EscalationClass(
        description="a volume of any driver but fixeduser's with driver options, created or used (`local` with "
        "`-o type=none -o device=/ -o o=bind` is a bind mount in disguise; another driver mounts whatever its "
        "options name, as whoever it mounts as)"
    ),
    "volumes-from": EscalationClass(description="volumes of a container you do not own (`--volumes-from`)"),
    "sysctls": EscalationClass(
        description="kernel parameters (`--sysctl`, a service's `Sysctls`, and per-endpoint sysctls: the "
        "`com.docker.network.endpoint.sysctls` driver option of an endpoint in a container create, a "
        "`network connect` or a service's network attachment, API 1.46+)"
    ),
    "annotations": EscalationClass(
        description="OCI annotations (`--annotation`, `HostConfig.Annotations`, API 1.43+): runtimes read them "
        "as settings, and with the systemd cgroup driver `org.systemd.property.*` annotations become properties "
        "of the container's systemd unit"
    ),
    "runtime": EscalationClass(description="a runtime other than runc (`--runtime`)"),
    "cgroup-parent": EscalationClass(description="a custom cgroup parent (`--cgroup-parent`, also on builds)"),
    "checkpoints": EscalationClass(
        description="starting a container from a checkpoint (`docker start --checkpoint`, the `checkpoint` and "
        "`checkpoint-dir` query parameters, experimental daemons): CRIU restores process state from files, and "
        "`checkpoint-dir` names a folder on the host"
    ),
    "buildkit": EscalationClass(
        description="BuildKit's gRPC control API (`POST /grpc`, used by buildx): a stream fixeduser cannot read, "
        "whose builds may ask for the `network.host` entitlement that dockerd grants by default"
    ),
    "exec-privileged": EscalationClass(description="a privileged exec (`docker exec --privileged`)"),
    "exec-user": EscalationClass(description="an exec as a chosen user (`docker exec --user`)"),
    "service-volumes": EscalationClass(
        description="a swarm service mounting fixeduser volumes: the daemon starts its tasks without an API "
        "request, so no owner identity can be checked"
    ),
    "plugin-management": EscalationClass(
        description="installing, enabling, disabling, configuring, upgrading, pushing or removing plugins, and "
        "services that run plugins: a disabled authorization plugin lets everything through"
    ),
    "swarm-membership": EscalationClass(
        description="initializing, joining, leaving, updating or unlocking a swarm: a swarm manager elsewhere "
        "could start containers here without any API request"
    ),
}


class Escalation(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    detail: str  # quoted in the denial: clipped, as it quotes the request (a path, a list of names)
    obj: str = ESCALATION_OBJECT
    act: str = ""

    @field_validator("detail")
    @classmethod
    def _bounded(cls, detail: str) -> str:
        return clip(detail)

    @property
    def action(self) -> str:
        return self.act or self.kind


def container_escalations(
    create: ContainerCreate,
    *,
    protected: Iterable[Path],
    is_foreign_container: Callable[[str], bool],
    is_our_driver: Callable[[str], bool],
) -> list[Escalation]:
    """Every escalation class in a container create, with the detail that triggered it."""
    host = create.host_config
    found: list[Escalation] = []
    if host.privileged:
        found.append(Escalation(kind="privileged", detail="--privileged"))
    if host.cap_add:
        found.append(Escalation(kind="capabilities", detail=f"--cap-add {','.join(host.cap_add)}"))
    if host.capabilities is not None:
        found.append(Escalation(kind="capabilities", detail=f"HostConfig.Capabilities {host.capabilities}"))
    if host.devices or host.device_cgroup_rules or host.device_requests:
        found.append(Escalation(kind="devices", detail="--device / --device-cgroup-rule / --gpus"))
    found.extend(_namespace_escalations(create, is_foreign_container))
    unsafe = [opt for opt in host.security_opt if opt not in SAFE_SECURITY_OPTS]
    # An explicit (even empty) list replaces the daemon's /proc and /sys masking.
    unsafe += [
        f"{name}={paths}"
        for name, paths in (("MaskedPaths", host.masked_paths), ("ReadonlyPaths", host.readonly_paths))
        if paths is not None
    ]
    if unsafe:
        found.append(Escalation(kind="security-options", detail=f"--security-opt {' '.join(unsafe)}"))
    found.extend(_bind_escalations(create, _protected_roots(protected), is_our_driver))
    found.extend(_runtime_setting_escalations(create))
    if host.runtime and host.runtime != "runc":
        found.append(Escalation(kind="runtime", detail=f"--runtime {host.runtime}"))
    if host.cgroup_parent:
        found.append(Escalation(kind="cgroup-parent", detail=f"--cgroup-parent {host.cgroup_parent}"))
    for source in host.volumes_from:
        container = source.split(":", 1)[0]
        if is_foreign_container(container):
            found.append(Escalation(kind="volumes-from", detail=f"--volumes-from {container}"))
    for link in [*host.links, *create.endpoint_links]:
        container = link.split(":", 1)[0]
        if is_foreign_container(container):
            found.append(Escalation(kind="links", detail=f"--link {container}"))
    return found


def _runtime_setting_escalations(create: ContainerCreate) -> list[Escalation]:
    """Settings the daemon hands to the kernel or the runtime as they are: sysctls and annotations."""
    host = create.host_config
    found = []
    if host.sysctls:
        found.append(Escalation(kind="sysctls", detail=f"--sysctl {','.join(sorted(host.sysctls))}"))
    found.extend(endpoint_sysctl_escalations(create.endpoint_sysctls))
    if host.annotations:
        found.append(Escalation(kind="annotations", detail=f"--annotation {','.join(sorted(host.annotations))}"))
    return found


def _protected_roots(protected: Iterable[Path]) -> tuple[Path, ...]:
    return _resolved_roots(tuple(protected))


@functools.lru_cache(maxsize=16)
def _resolved_roots(protected: tuple[Path, ...]) -> tuple[Path, ...]:
    # Deployment paths: resolved once, not with several lstat calls on every container create.
    return tuple(Path(os.path.realpath(p)) for p in (*protected, *BUILTIN_PROTECTED))


def _namespace_escalations(create: ContainerCreate, is_foreign: Callable[[str], bool]) -> list[Escalation]:
    found = []
    for field in NAMESPACE_MODES:
        mode: str = getattr(create.host_config, field)
        name = field.removesuffix("_mode")
        if field == "network_mode":
            # The daemon reads "host" and "container:<ref>"; anything else names a network.
            if mode == "host":
                found.append(Escalation(kind="namespaces", detail="--network=host"))
            elif mode.partition(":")[0] == "container" and ":" in mode and is_foreign(mode.partition(":")[2]):
                found.append(Escalation(kind="namespaces", detail=f"--network={mode}"))
            continue
        if mode in SAFE_NAMESPACE_VALUES[field]:
            continue
        kind, _, ref = mode.partition(":")
        if kind == "container" and ref and not is_foreign(ref):
            continue  # a namespace of one's own container
        found.append(Escalation(kind="namespaces", detail=f"--{name}={mode}"))
    return found


def _bind_escalations(
    create: ContainerCreate, protected: Sequence[Path], is_our_driver: Callable[[str], bool]
) -> list[Escalation]:
    found = [_bind_escalation(b.source, protected) for b in create.host_config.binds if b.kind == "bind"]
    found += _mount_escalations(create.host_config.mounts, protected, is_our_driver)
    return found


def _mount_escalations(
    mounts: Iterable[MountSpec], protected: Sequence[Path], is_our_driver: Callable[[str], bool]
) -> list[Escalation]:
    found = []
    for mount in mounts:
        if mount.type == "bind":
            found.append(_bind_escalation(mount.source, protected, flag="--mount type=bind,source="))
        elif mount.type == "volume":
            what = f"--mount {mount.source or 'anonymous'}"
            found += driver_options_escalations(what, mount.volume_driver, mount.volume_driver_opts, is_our_driver)
    return found


def start_bind_escalations(sources: Iterable[str], protected: Iterable[Path]) -> list[Escalation]:
    """The bind escalations of a container's binds as they resolve now.

    The daemon resolves bind sources again at every start (measured: a folder swapped for a link
    to /etc/docker after the create is what the started container sees), so each start, restart
    and archive call checks them again, not only the create."""
    roots = _protected_roots(protected)
    return [_bind_escalation(source, roots, flag="bind ") for source in sources]


def _bind_escalation(source: str, protected: Sequence[Path], *, flag: str = "-v ") -> Escalation:
    # The daemon bind-mounts what the path resolves to on the host, symlinks and `..` included;
    # a relative source (which the daemon rejects) is checked as the root it could reach.
    resolved = Path(os.path.realpath(source if source.startswith("/") else "/"))
    for root in protected:
        if resolved == root or root in resolved.parents or resolved in root.parents:
            return Escalation(kind="protected-bind", detail=f"{flag}{source} (reaches {root})")
    return Escalation(kind="bind", detail=f"{flag}{source}", obj=f"bind:{resolved}", act="bind")


def driver_options_escalations(
    what: str, driver: str, options: dict[str, str], is_our_driver: Callable[[str], bool]
) -> list[Escalation]:
    """`what` (a volume create, a `--mount`, an existing volume used by name) with options for a driver other
    than fixeduser's.

    fixeduser's own driver checks its options itself (fixeduser.state.options). Any other driver mounts what its
    options name: `local` takes type/device/o (a bind mount in disguise), a network driver a server and share, and
    fixeduser cannot tell a harmless option from one that reaches the host or storage as someone else."""
    if not options or is_our_driver(driver):
        return []
    # An empty driver is `local` to the daemon (a --mount's DriverConfig.Name: never HostConfig.VolumeDriver).
    detail = f"{what} (driver {driver or 'local'} options {sorted(options)})"
    return [Escalation(kind="volume-driver-bind", detail=detail)]


def service_escalations(
    spec: ServiceSpec,
    *,
    protected: Iterable[Path],
    is_fixeduser_volume: Callable[[MountSpec], bool],
    is_our_driver: Callable[[str], bool],
) -> list[Escalation]:
    """Every escalation class in a swarm service spec: its tasks start with no API request to check."""
    found: list[Escalation] = []
    if spec.has_plugin_spec or spec.runtime not in ("", "container"):
        found.append(Escalation(kind="plugin-management", detail=f"a service with runtime {spec.runtime or 'plugin'}"))
    if "host" in spec.networks:
        found.append(Escalation(kind="namespaces", detail="a service on the host network"))
    found.extend(endpoint_sysctl_escalations(spec.endpoint_sysctls))
    container = spec.container
    if container is None:
        return found
    if container.cap_add:
        found.append(Escalation(kind="capabilities", detail=f"--cap-add {','.join(container.cap_add)}"))
    if container.sysctls:
        found.append(Escalation(kind="sysctls", detail=f"--sysctl {','.join(sorted(container.sysctls))}"))
    if container.loosened:
        found.append(Escalation(kind="security-options", detail=f"privileges {' '.join(container.loosened)}"))
    found += _mount_escalations(container.mounts, _protected_roots(protected), is_our_driver)
    ours = sorted({m.source or "anonymous" for m in container.mounts if is_fixeduser_volume(m)})
    if ours:
        found.append(Escalation(kind="service-volumes", detail=f"--mount of fixeduser volume(s) {', '.join(ours)}"))
    return found


def endpoint_sysctl_escalations(by_network: dict[str, str]) -> list[Escalation]:
    """Per-endpoint sysctls (`DriverOpts[com.docker.network.endpoint.sysctls]`), by network name."""
    return [
        Escalation(kind="sysctls", detail=f"endpoint sysctls {value!r} on network {network!r}")
        for network, value in sorted(by_network.items())
    ]


def start_escalations(query: dict[str, list[str]]) -> list[Escalation]:
    """Escalations in `POST /containers/{id}/start` query parameters (the daemon reads the first value)."""
    checkpoint = (query.get("checkpoint") or [""])[0]
    directory = (query.get("checkpoint-dir") or [""])[0]
    if checkpoint or directory:
        detail = f"--checkpoint {checkpoint}" + (f" --checkpoint-dir {directory}" if directory else "")
        return [Escalation(kind="checkpoints", detail=detail)]
    return []


def build_escalations(query: dict[str, list[str]]) -> list[Escalation]:
    """Escalations in `POST /build` query parameters (the build's RUN steps are containers too).

    The daemon reads the first `networkmode` and `cgroupparent` (Go's FormValue) and every
    `securityopt`, which the classic builder gives each RUN step's container."""
    found = []
    network = (query.get("networkmode") or [""])[0]
    if network == "host" or network.startswith("container:"):
        found.append(Escalation(kind="namespaces", detail=f"docker build --network {network}"))
    parent = (query.get("cgroupparent") or [""])[0]
    if parent:
        found.append(Escalation(kind="cgroup-parent", detail=f"docker build --cgroup-parent {parent}"))
    unsafe = [opt for opt in query.get("securityopt", []) if opt not in SAFE_SECURITY_OPTS]
    if unsafe:
        found.append(Escalation(kind="security-options", detail=f"docker build --security-opt {' '.join(unsafe)}"))
    return found


def policy_line(kind: str) -> str:
    """The policy line that grants escalation class `kind`."""
    return CLASSES[kind].grant or f"p, <subject>, {ESCALATION_OBJECT}, {kind}"


def escalations_markdown() -> str:
    """docs/escalations.md: every class, its default and the line that grants it."""
    lines = [
        "# Escalations",
        "",
        "<!-- Generated from fixeduser.policy.escalations.CLASSES by "
        "`python -m fixeduser.policy.escalations > docs/escalations.md`; do not edit. -->",
        "",
        "Anything in a request that could reach the host, another user's container or storage outside",
        "the fixed-user path is an *escalation*. Each is denied unless the policy grants its class to",
        "the user or one of their roles (`p, role:admin, *, *` grants all of them). A denial names the",
        "class and the missing line.",
        "",
        "| Class | What it covers | Default | Policy line that grants it |",
        "|---|---|---|---|",
    ]
    for kind, cls in CLASSES.items():
        description = cls.description.replace("|", "\\|")
        lines.append(f"| `{kind}` | {description} | denied | `{policy_line(kind)}` |")
    lines += ["", *route_decisions_markdown()]
    lines += ["", "## Known limit", "", *KNOWN_LIMIT]
    return "\n".join(lines) + "\n"


KNOWN_LIMIT = (
    "Bind sources are resolved (symlinks and `..`) in the plugin's mount namespace when the container",
    "create is decided, and again when each start, restart or archive (`docker cp`) call is decided,",
    "because the daemon resolves them again at every start (a folder swapped for a link to `/` after",
    "the create is what a later start would mount). Left open: a swap in the milliseconds between that",
    "decision and the daemon's mount, and starts the daemon makes by itself (restart policies), which",
    "no API request announces. What limits it:",
    "",
    "- only someone who can write the folder holding the swapped component can do it: host users",
    "  cannot write host paths they were not given, and no engineer has a bind grant in the example",
    "  policy (every bind needs `p, <subject>, bind:<path pattern>, bind`);",
    "- a container's root can write into a *writable* bind it was granted (binds are not fixed-user),",
    "  so grant binds only of folders whose contents those users must not rearrange, below a parent",
    "  they cannot write, or that are read-only data;",
    "- the protected roots (fixeduser's state, storage, mount and policy folders, the plugin and",
    "  Docker sockets, the Docker data root) are refused whatever path reaches them at decision time,",
    "  so the swap has to happen after an allowed create.",
)


if __name__ == "__main__":
    print(escalations_markdown(), end="")


def exec_escalations(create: ExecCreate) -> list[Escalation]:
    found = []
    if create.privileged:
        found.append(Escalation(kind="exec-privileged", detail="docker exec --privileged"))
    if create.user:
        found.append(Escalation(kind="exec-user", detail=f"docker exec --user {create.user}"))
    return found
