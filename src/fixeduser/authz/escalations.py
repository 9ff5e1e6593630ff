"""What in a container or exec create could reach the host or storage outside the fixed-user path.

Each finding names a class; the policy grants a class with `p, <subject>, escalation, <class>`,
and a host path with `p, <subject>, bind:<path pattern>, bind`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fixeduser.docker_api import ContainerCreate, ExecCreate

ESCALATION_OBJECT = "escalation"
NAMESPACE_MODES = ("pid_mode", "ipc_mode", "uts_mode", "userns_mode", "cgroupns_mode", "network_mode")
SAFE_SECURITY_OPTS = frozenset({"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"})
LOCAL_BIND_OPTIONS = frozenset({"device", "o", "type"})

# The table in README.md ("Escalations") documents each class; keep them in step.
CLASSES = {
    "privileged": "privileged mode",
    "capabilities": "added capabilities",
    "devices": "host devices, device cgroup rules or device requests",
    "namespaces": "host or another container's namespaces",
    "security-options": "security options that change confinement",
    "bind": "a bind mount of a host path (granted per path: `bind:<path>`, action `bind`)",
    "protected-bind": "a bind mount of fixeduser's own state, storage or mount folders",
    "volume-driver-bind": "a `local` volume with driver options (a bind mount in disguise)",
    "volumes-from": "volumes of a container owned by someone else",
    "sysctls": "kernel parameters",
    "runtime": "a runtime other than runc",
    "cgroup-parent": "a custom cgroup parent",
    "exec-privileged": "a privileged exec",
    "exec-user": "an exec as a chosen user",
}


class Escalation(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    detail: str
    obj: str = ESCALATION_OBJECT
    act: str = ""

    @property
    def action(self) -> str:
        return self.act or self.kind


def container_escalations(
    create: ContainerCreate,
    *,
    protected: Iterable[Path],
    is_foreign_container: Callable[[str], bool],
) -> list[Escalation]:
    """Every escalation class in a container create, with the detail that triggered it."""
    host = create.host_config
    found: list[Escalation] = []
    if host.privileged:
        found.append(Escalation(kind="privileged", detail="--privileged"))
    if host.cap_add:
        found.append(Escalation(kind="capabilities", detail=f"--cap-add {','.join(host.cap_add)}"))
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
    found.extend(_bind_escalations(create, [p.resolve() for p in protected]))
    if host.sysctls:
        found.append(Escalation(kind="sysctls", detail=f"--sysctl {','.join(sorted(host.sysctls))}"))
    if host.runtime and host.runtime != "runc":
        found.append(Escalation(kind="runtime", detail=f"--runtime {host.runtime}"))
    if host.cgroup_parent:
        found.append(Escalation(kind="cgroup-parent", detail=f"--cgroup-parent {host.cgroup_parent}"))
    for source in host.volumes_from:
        container = source.split(":", 1)[0]
        if is_foreign_container(container):
            found.append(Escalation(kind="volumes-from", detail=f"--volumes-from {container}"))
    return found


def _namespace_escalations(create: ContainerCreate, is_foreign: Callable[[str], bool]) -> list[Escalation]:
    found = []
    for field in NAMESPACE_MODES:
        mode: str = getattr(create.host_config, field)
        name = field.removesuffix("_mode")
        if mode == "host":
            found.append(Escalation(kind="namespaces", detail=f"--{name}=host"))
        elif mode.startswith("container:") and is_foreign(mode.removeprefix("container:")):
            found.append(Escalation(kind="namespaces", detail=f"--{name}={mode}"))
    return found


def _bind_escalations(create: ContainerCreate, protected: list[Path]) -> list[Escalation]:
    sources = [b.source for b in create.host_config.binds if b.kind == "bind"]
    sources += [m.source for m in create.host_config.mounts if m.type == "bind"]
    found = [_bind_escalation(source, protected) for source in sources]
    for mount in create.host_config.mounts:
        if mount.type == "volume" and _is_local_bind(mount.volume_driver, mount.volume_driver_opts):
            found.append(Escalation(kind="volume-driver-bind", detail=f"--mount {mount.source or 'anonymous'}"))
    return found


def _bind_escalation(source: str, protected: list[Path]) -> Escalation:
    # The daemon bind-mounts what the path resolves to on the host, symlinks and `..` included.
    resolved = Path(os.path.realpath(source))
    for root in protected:
        if resolved == root or root in resolved.parents or resolved in root.parents:
            return Escalation(kind="protected-bind", detail=f"-v {source} (reaches {root})")
    return Escalation(kind="bind", detail=f"-v {source}", obj=f"bind:{resolved}", act="bind")


def _is_local_bind(driver: str, options: dict[str, str]) -> bool:
    return driver in ("", "local") and bool(LOCAL_BIND_OPTIONS & set(options))


def volume_create_escalations(driver: str, options: dict[str, str]) -> list[Escalation]:
    if _is_local_bind(driver, options):
        return [Escalation(kind="volume-driver-bind", detail=f"volume driver options {sorted(options)}")]
    return []


def exec_escalations(create: ExecCreate) -> list[Escalation]:
    found = []
    if create.privileged:
        found.append(Escalation(kind="exec-privileged", detail="docker exec --privileged"))
    if create.user:
        found.append(Escalation(kind="exec-user", detail=f"docker exec --user {create.user}"))
    return found
