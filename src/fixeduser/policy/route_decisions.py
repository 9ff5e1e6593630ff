"""What fixeduser decides for every daemon route, by what the daemon reads from the request.

Reviewed against the daemon's routers in 20.10.24, 26.1.5 and 28.5.2. docs/escalations.md shows
this table (tests/authz/test_escalations_doc.py checks that it covers every route in ROUTES).
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict


class RouteDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    actions: tuple[str, ...]
    reads: str  # what the daemon reads from the request: body, query
    decision: str
    why: str


OWNER = "owner only (or `others`)"
API_ONLY = "`api` permission only (the example policy grants it to admins only)"

ROUTE_DECISIONS: Final[tuple[RouteDecision, ...]] = (
    RouteDecision(
        actions=("container.create",),
        reads="body: Config, HostConfig, NetworkingConfig; query `name`, `platform`",
        decision="checked: every escalation class above; fixeduser volumes mount as the owner's identity",
        why="the create sets everything the container will reach",
    ),
    RouteDecision(
        actions=("container.start",),
        reads="body (API < 1.24: a HostConfig, top-level fields too); query `checkpoint`, `checkpoint-dir`",
        decision=f"checked: {OWNER}; the body must be empty JSON (none, whitespace, `{{}}`, `null`); a checkpoint "
        "is `checkpoints`; binds are checked again",
        why="20.10 applies a start body's HostConfig below API 1.24 (measured); newer daemons refuse bodies over "
        "7 bytes, and no current client sends one",
    ),
    RouteDecision(
        actions=("container.update",),
        reads="body: Resources and RestartPolicy",
        decision=f"checked: {OWNER}; the body must be shown; until its answer and a reading of the daemon after "
        "it, every Mount asks which containers restart",
        why="the daemon applies only CPU shares/period/quota/realtime, NanoCPUs, cpusets, memory, swap, "
        "reservation, kernel memory, blkio weight, pids limit and the restart policy (20.10 to 28.5): limits of "
        "one's own container; Devices, DeviceCgroupRules, CgroupParent and Ulimits in an update are ignored",
    ),
    RouteDecision(
        actions=("container.commit",),
        reads="body: the new image's Config; query `container`, `repo`, `tag`, `author`, `comment`, `changes`, `pause`",
        decision=f"{OWNER}; body and query harmless",
        why="they set the image's metadata (CMD, ENV, VOLUME...), never a HostConfig; a container made from the "
        "image is checked at its own create",
    ),
    RouteDecision(
        actions=("container.archive.put",),
        reads="body: a tar; query `path`, `noOverwriteDirNonDir`, `copyUIDGID`",
        decision=f"{OWNER}; mounts as the owner's identity, like a start",
        why="the tar lands inside the container, whose fixeduser volumes are mounted through the owner's view",
    ),
    RouteDecision(
        actions=(
            "container.archive.get",
            "container.archive.head",
            "container.export",
            "container.changes",
            "container.inspect",
            "container.top",
            "container.logs",
            "container.stats",
            "container.attach",
            "container.attach.ws",
            "container.wait",
            "container.resize",
            "container.kill",
            "container.stop",
            "container.restart",
            "container.pause",
            "container.unpause",
            "container.rename",
            "container.remove",
        ),
        reads="query only (`path`, `signal`, `t`, `condition`, stream options, `name`, `v`, `link`, `force`)",
        decision=f"{OWNER}; archive reads and restarts mount as the owner's identity",
        why="they act on one container; `v=1` on a remove deletes anonymous volumes only, and anonymous fixeduser "
        "volumes are refused at create",
    ),
    RouteDecision(
        actions=("container.list",),
        reads="query `all`, `filters`, `size`",
        decision="harmless",
        why="lists containers, like `docker ps`",
    ),
    RouteDecision(
        actions=("container.prune",),
        reads="query `filters`",
        decision="needs `others`",
        why="removes every user's stopped containers",
    ),
    RouteDecision(
        actions=("exec.create",),
        reads="body: Cmd, User, Privileged, Env, WorkingDir, streams",
        decision=f"checked: {OWNER}; `exec-privileged`, `exec-user`",
        why="an exec runs in the container's namespaces with the settings it asks for",
    ),
    RouteDecision(
        actions=("exec.start", "exec.resize", "exec.inspect"),
        reads="body: Detach, Tty, ConsoleSize; query `h`, `w`",
        decision="owner of the exec's container only (or `others`); body harmless",
        why="the body only chooses how the output is streamed",
    ),
    RouteDecision(
        actions=("volume.create", "volume.remove", "volume.prune"),
        reads="body: Name, Driver, DriverOpts, Labels; query `force`, `filters`",
        decision="checked: fixeduser volume grants; options for any other driver are `volume-driver-bind`",
        why="volumes are what fixeduser guards",
    ),
    RouteDecision(
        actions=("volume.update",),
        reads="body: a cluster volume's spec; query `version`",
        decision=API_ONLY,
        why="cluster (CSI) volumes only: a daemon that is not a swarm manager refuses it, and joining a swarm "
        "is `swarm-membership`",
    ),
    RouteDecision(
        actions=("volume.list", "volume.inspect"),
        reads="query `filters`",
        decision="harmless",
        why="read only",
    ),
    RouteDecision(
        actions=("network.create",),
        reads="body: Name, Driver, Options, IPAM, Internal, Attachable, Ingress, ConfigFrom, EnableIPv6...",
        decision=API_ONLY,
        why="every network create configures the host (bridges, routes, iptables; macvlan/ipvlan `parent` "
        "interfaces): grant it only to whoever may change the host's networking; no finer class would make it safe",
    ),
    RouteDecision(
        actions=("network.connect",),
        reads="body: Container, EndpointConfig (Links, DriverOpts, IPAMConfig, Aliases, MacAddress)",
        decision="checked: owner of the container; links to others' containers are `links`; per-endpoint "
        "sysctls are `sysctls`",
        why="addresses and aliases stay inside a network that already exists",
    ),
    RouteDecision(
        actions=("network.disconnect",),
        reads="body: Container, Force",
        decision="checked: owner of the container",
        why="it changes that container",
    ),
    RouteDecision(
        actions=("network.remove", "network.prune"),
        reads="query `filters`",
        decision=API_ONLY,
        why="removes networks: no host path, namespace or volume",
    ),
    RouteDecision(
        actions=("network.list", "network.inspect"),
        reads="query `filters`, `verbose`, `scope`",
        decision="harmless",
        why="read only",
    ),
    RouteDecision(
        actions=("image.create",),
        reads="query `fromImage`, `fromSrc`, `repo`, `tag`, `platform`, `changes`, `message`; body: a tar when "
        "`fromSrc=-`",
        decision=API_ONLY,
        why="`fromSrc=<URL>` makes the daemon fetch a URL from the host's network; images are data, and a "
        "container made from one is checked at its create",
    ),
    RouteDecision(
        actions=("image.load", "image.push", "image.tag", "image.remove", "image.prune"),
        reads="body: a tar (load); query `quiet`, `repo`, `tag`, `force`, `noprune`, `filters`",
        decision=API_ONLY,
        why="the image store and registries only",
    ),
    RouteDecision(
        actions=("image.list", "image.search", "image.inspect", "image.history", "image.get", "image.get.many"),
        reads="query `filters`, `term`, `names`",
        decision="harmless",
        why="read only",
    ),
    RouteDecision(
        actions=("image.build",),
        reads="query `networkmode`, `cgroupparent`, `securityopt`, `ulimits`, `extrahosts`, `remote`, `outputs`, "
        "...; body: the context (a tar)",
        decision="checked: `namespaces` (host, `container:`, the host network by ID), `cgroup-parent`, "
        "`security-options`, each as the daemon reads it (first `networkmode`, every `securityopt`); the body is "
        "not JSON and not needed",
        why="the classic builder gives each RUN step's container these settings; `remote=<URL>` makes the daemon "
        "fetch a URL, so grant `image.build` knowingly",
    ),
    RouteDecision(
        actions=("build.prune", "build.cancel"),
        reads="query `filters`, `all`, `id`",
        decision="harmless",
        why="the build cache, and cancelling a build by ID",
    ),
    RouteDecision(
        actions=("session.start",),
        reads="a hijacked stream: the client's file sync, auth and ssh services for BuildKit",
        decision="`api` permission only",
        why="the client offers its own files to the daemon; a build still needs `image.build` (checked) or "
        "`/grpc` (`buildkit`)",
    ),
    RouteDecision(
        actions=("grpc.start",),
        reads="a gRPC stream: BuildKit's control API (Solve with entitlements, prune, status)",
        decision="escalation `buildkit`",
        why="fixeduser cannot read it, and dockerd grants the `network.host` entitlement by default",
    ),
    RouteDecision(
        actions=(
            "plugin.pull",
            "plugin.upgrade",
            "plugin.create",
            "plugin.set",
            "plugin.enable",
            "plugin.disable",
            "plugin.remove",
            "plugin.push",
        ),
        reads="body: privileges, args, a tar (create); query `remote`, `name`, `force`, `timeout`",
        decision="escalation `plugin-management`",
        why="a plugin runs as root on the host, and a disabled authorization plugin lets everything through",
    ),
    RouteDecision(
        actions=("plugin.list", "plugin.inspect", "plugin.privileges"),
        reads="query `filters`, `remote`",
        decision="harmless",
        why="read only",
    ),
    RouteDecision(
        actions=(
            "swarm.init",
            "swarm.join",
            "swarm.leave",
            "swarm.update",
            "swarm.unlock",
            "swarm.unlockkey",
            "node.update",
            "node.remove",
        ),
        reads="body: swarm and node specs, join tokens, unlock keys",
        decision="escalation `swarm-membership`",
        why="a swarm manager elsewhere could start containers here without any API request",
    ),
    RouteDecision(
        actions=("swarm.inspect", "node.list", "node.inspect"),
        reads="query `filters`",
        decision="harmless",
        why="read only",
    ),
    RouteDecision(
        actions=("service.create", "service.update"),
        reads="body: ServiceSpec; query `version`, `registryAuthFrom`, `rollback`",
        decision="checked like a container create (mounts, capabilities, sysctls and per-endpoint sysctls, "
        "privileges, host network, plugins, fixeduser volumes); update: creator only",
        why="its tasks start without any API request",
    ),
    RouteDecision(
        actions=(
            "service.list",
            "service.inspect",
            "service.remove",
            "service.logs",
            "task.list",
            "task.inspect",
            "task.logs",
        ),
        reads="query `filters`, log options",
        decision="inspect, remove, logs: the service's creator only (or `others`); lists harmless",
        why="a spec shows its environment",
    ),
    RouteDecision(
        actions=(
            "secret.create",
            "secret.update",
            "secret.remove",
            "secret.list",
            "secret.inspect",
            "config.create",
            "config.update",
            "config.remove",
            "config.list",
            "config.inspect",
        ),
        reads="body: the secret's or config's data and labels",
        decision=API_ONLY,
        why="swarm data that only services (checked) can use; it needs a swarm (`swarm-membership`)",
    ),
    RouteDecision(
        actions=("checkpoint.create", "checkpoint.list", "checkpoint.remove"),
        reads="body: CheckpointID, CheckpointDir, Exit; query `dir`",
        decision=API_ONLY,
        why="experimental daemons only; `CheckpointDir` is a host folder CRIU writes to, so grant "
        "`api, checkpoint.*` only to host admins; starting from a checkpoint is `checkpoints`",
    ),
    RouteDecision(
        actions=("system.auth",),
        reads="body: registry credentials (never shown to plugins)",
        decision="harmless",
        why="it only checks a login against a registry",
    ),
    RouteDecision(
        actions=(
            "system.ping",
            "system.info",
            "system.version",
            "system.df",
            "system.events",
            "system.options",
            "distribution.inspect",
        ),
        reads="query `since`, `until`, `filters`, `type`",
        decision="ping always allowed; the rest harmless",
        why="read only",
    ),
)

ROUTE_NOTES: Final = (
    "Before any of these, every route (ping included) is denied when its path carries an API version older than",
    "1.24 (`/v1.23/...`, compared like the daemon: `1.023` and `01.20` are old, `1.024` is not): Debian 12's",
    "20.10 serves down to 1.12 and applies a HostConfig sent with a start below 1.24. Unversioned paths are",
    "the current version. Form-encoded bodies are denied (they can override the query). Where fixeduser must",
    "read a body (create, start, update, exec create, volume create, network connect and disconnect, service",
    "create and update) and the daemon did not show it (not JSON, 1 MiB or more, or chunked over 1 MiB: the",
    "request then has a non-zero or no `Content-Length`), the request is denied.",
)


def route_decisions_markdown() -> list[str]:
    """The section of docs/escalations.md that lists every route's decision."""
    lines = ["## What every route's body and query can do", "", *ROUTE_NOTES, ""]
    lines += ["| Routes | What the daemon reads | Decision | Why |", "|---|---|---|---|"]
    for row in ROUTE_DECISIONS:
        cells = [", ".join(f"`{a}`" for a in row.actions), row.reads, row.decision, row.why]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines
