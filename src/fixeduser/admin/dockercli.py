"""Common `docker` command lines as the Engine API requests the CLI sends for them.

Only what an authorization decision depends on is reproduced (method, path, query, the JSON body
fields fixeduser reads); an option this module does not know is an error, never silently dropped,
because dropping `--privileged` would explain a different request than the one the user runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

API = "/v1.41"
# Placeholder ID for the container a `docker run` creates (the daemon would choose one).
NEW_CONTAINER_ID = "f1" * 32


class CliError(ValueError):
    """A docker command line this translator cannot turn into API requests."""


@dataclass(frozen=True)
class ApiCall:
    """One request the CLI would send; `created_id` makes it answer like a successful create."""

    method: str
    uri: str
    body: dict[str, Any] | None = None
    created_id: str | None = None


@dataclass
class Translation:
    calls: list[ApiCall]
    volumes: set[str] = field(default_factory=set)  # named volumes the command uses
    containers: set[str] = field(default_factory=set)  # existing containers it refers to


_RUN_FLAGS = {"-d", "--detach", "--rm", "-i", "--interactive", "-t", "--tty", "--privileged", "--init", "--read-only"}
_RUN_VALUES = {
    "-v", "--volume", "--mount", "--name", "--volume-driver", "--volumes-from", "--cap-add", "--cap-drop",
    "--device", "--device-cgroup-rule", "--gpus", "--network", "--net", "--pid", "--ipc", "--uts", "--userns",
    "--cgroupns", "--security-opt", "--sysctl", "--runtime", "--cgroup-parent", "-u", "--user", "-e", "--env",
    "-w", "--workdir", "--entrypoint", "--restart", "-h", "--hostname", "-l", "--label", "-p", "--publish",
    "-m", "--memory", "--tmpfs", "--group-add", "--platform", "--pull", "--env-file", "--stop-signal",
}  # fmt: skip
_EXEC_FLAGS = {"-d", "--detach", "-i", "--interactive", "-t", "--tty", "--privileged"}
_EXEC_VALUES = {"-u", "--user", "-e", "--env", "-w", "--workdir", "--env-file"}
_ALIASES = {
    "--volume": "-v", "--net": "--network", "--user": "-u", "--env": "-e", "--detach": "-d",
    "--interactive": "-i", "--tty": "-t", "--workdir": "-w", "--hostname": "-h", "--label": "-l",
    "--publish": "-p", "--memory": "-m",
}  # fmt: skip


def _options(
    args: list[str], flags: set[str], values: set[str], what: str
) -> tuple[dict[str, list[str]], set[str], list[str]]:
    """Split `docker <what>` arguments into options with values, flags and the positional rest."""
    options: dict[str, list[str]] = {}
    seen: set[str] = set()
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return options, seen, args[index + 1 :]
        if not arg.startswith("-") or arg == "-":
            return options, seen, args[index:]
        name, eq, value = arg.partition("=")
        if name in values:
            if not eq:
                index += 1
                if index >= len(args):
                    raise CliError(f"docker {what}: {name} needs a value")
                value = args[index]
            options.setdefault(_ALIASES.get(name, name), []).append(value)
        elif name in flags and not eq:
            seen.add(_ALIASES.get(name, name))
        elif not name.startswith("--") and len(name) > 2 and all(f"-{c}" in flags for c in name[1:]):
            seen |= {f"-{c}" for c in name[1:]}  # -it, -dit
        else:
            raise CliError(f"docker {what}: option {arg!r} is not known to fixeduser explain; use --method/--uri")
        index += 1
    return options, seen, []


def _mount_spec(spec: str) -> dict[str, Any]:
    """A `--mount` value as the CLI sends it in HostConfig.Mounts."""
    mount: dict[str, Any] = {"Type": "volume"}
    driver: dict[str, Any] = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key == "type":
            mount["Type"] = value
        elif key in ("source", "src"):
            mount["Source"] = value
        elif key in ("target", "destination", "dst"):
            mount["Target"] = value
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = value.lower() not in ("false", "0")
        elif key == "volume-driver":
            driver["Name"] = value
        elif key == "volume-opt":
            opt_key, _, opt_value = value.partition("=")
            driver.setdefault("Options", {})[opt_key] = opt_value
        elif key == "volume-subpath":
            mount.setdefault("VolumeOptions", {})["Subpath"] = value
        elif key not in ("volume-nocopy", "bind-propagation", "consistency"):
            raise CliError(f"--mount: key {key!r} is not known to fixeduser explain")
    if driver:
        mount.setdefault("VolumeOptions", {})["DriverConfig"] = driver
    return mount


def _create_body(options: dict[str, list[str]], flags: set[str], rest: list[str]) -> dict[str, Any]:
    if not rest:
        raise CliError("docker run/create: no image given")
    host: dict[str, Any] = {
        "Binds": options.get("-v", []),
        "Mounts": [_mount_spec(spec) for spec in options.get("--mount", [])],
        "NetworkMode": options.get("--network", ["default"])[-1],
        "Privileged": "--privileged" in flags,
        "AutoRemove": "--rm" in flags,
        "ReadonlyRootfs": "--read-only" in flags,
    }
    single = {
        "--volume-driver": "VolumeDriver", "--pid": "PidMode", "--ipc": "IpcMode", "--uts": "UTSMode",
        "--userns": "UsernsMode", "--cgroupns": "CgroupnsMode", "--runtime": "Runtime",
        "--cgroup-parent": "CgroupParent",
    }  # fmt: skip
    for option, key in single.items():
        if option in options:
            host[key] = options[option][-1]
    lists = {
        "--volumes-from": "VolumesFrom", "--cap-add": "CapAdd", "--cap-drop": "CapDrop",
        "--security-opt": "SecurityOpt", "--device-cgroup-rule": "DeviceCgroupRules", "--group-add": "GroupAdd",
    }  # fmt: skip
    for option, key in lists.items():
        if option in options:
            host[key] = options[option]
    if "--device" in options:
        host["Devices"] = [_device(spec) for spec in options["--device"]]
    if "--gpus" in options:
        host["DeviceRequests"] = [{"Count": -1, "Capabilities": [["gpu"]]}]
    if "--sysctl" in options:
        host["Sysctls"] = dict(s.partition("=")[::2] for s in options["--sysctl"])
    if "--restart" in options:
        name, _, count = options["--restart"][-1].partition(":")
        host["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}
    if "--tmpfs" in options:
        host["Tmpfs"] = {spec.partition(":")[0]: spec.partition(":")[2] for spec in options["--tmpfs"]}
    body: dict[str, Any] = {"Image": rest[0], "Cmd": rest[1:], "HostConfig": host}
    if "-u" in options:
        body["User"] = options["-u"][-1]
    return body


def _device(spec: str) -> dict[str, str]:
    parts = spec.split(":")
    inside = parts[1] if len(parts) > 1 else parts[0]
    return {
        "PathOnHost": parts[0],
        "PathInContainer": inside,
        "CgroupPermissions": parts[2] if len(parts) > 2 else "rwm",
    }


def _container_path(reference: str, tail: str = "") -> str:
    return f"{API}/containers/{quote(reference, safe='')}{tail}"


def _volume_names(body: dict[str, Any]) -> set[str]:
    host = body["HostConfig"]
    names = {spec.split(":", 1)[0] for spec in host["Binds"] if ":" in spec and not spec.startswith(("/", "."))}
    names |= {m["Source"] for m in host["Mounts"] if m.get("Type") == "volume" and m.get("Source")}
    return names


def _run(args: list[str], *, start: bool) -> Translation:
    what = "run" if start else "create"
    options, flags, rest = _options(args, _RUN_FLAGS, _RUN_VALUES, what)
    body = _create_body(options, flags, rest)
    query = f"?{urlencode({'name': options['--name'][-1]})}" if "--name" in options else ""
    calls = [ApiCall("POST", f"{API}/containers/create{query}", body, created_id=NEW_CONTAINER_ID)]
    if start:
        if "-d" not in flags:
            calls.append(ApiCall("POST", _container_path(NEW_CONTAINER_ID, "/attach?stderr=1&stdout=1&stream=1")))
            calls.append(ApiCall("POST", _container_path(NEW_CONTAINER_ID, "/wait?condition=next-exit")))
        calls.append(ApiCall("POST", _container_path(NEW_CONTAINER_ID, "/start")))
    containers = {c.split(":", 1)[0] for c in body["HostConfig"].get("VolumesFrom", [])}
    return Translation(calls, volumes=_volume_names(body), containers=containers)


def _exec(args: list[str]) -> Translation:
    options, flags, rest = _options(args, _EXEC_FLAGS, _EXEC_VALUES, "exec")
    if len(rest) < 2:
        raise CliError("docker exec: give a container and a command")
    body: dict[str, Any] = {"Cmd": rest[1:], "Privileged": "--privileged" in flags}
    if "-u" in options:
        body["User"] = options["-u"][-1]
    calls = [
        ApiCall("POST", _container_path(rest[0], "/exec"), body),
        ApiCall("POST", f"{API}/exec/{'e0' * 32}/start", {"Detach": "-d" in flags}),
    ]
    return Translation(calls, containers={rest[0]})


def _volume(args: list[str]) -> Translation:
    if not args:
        raise CliError("docker volume: give a subcommand (create, rm, ls, inspect)")
    command, rest = args[0], args[1:]
    if command == "create":
        options, _, names = _options(rest, set(), {"-d", "--driver", "-o", "--opt", "--label"}, "volume create")
        driver = (options.get("-d") or options.get("--driver") or ["local"])[-1]
        opts = dict(o.partition("=")[::2] for o in options.get("-o", []) + options.get("--opt", []))
        body = {"Name": names[0] if names else "", "Driver": driver, "DriverOpts": opts, "Labels": {}}
        return Translation([ApiCall("POST", f"{API}/volumes/create", body)])
    if command in ("rm", "remove"):
        _, flags, names = _options(rest, {"-f", "--force"}, set(), "volume rm")
        query = "?force=1" if flags else ""
        calls = [ApiCall("DELETE", f"{API}/volumes/{quote(n, safe='')}{query}") for n in names]
        return Translation(calls, volumes=set(names))
    if command in ("ls", "list"):
        return Translation([ApiCall("GET", f"{API}/volumes")])
    if command == "inspect":
        return Translation([ApiCall("GET", f"{API}/volumes/{quote(n, safe='')}") for n in rest], volumes=set(rest))
    if command == "prune":
        return Translation([ApiCall("POST", f"{API}/volumes/prune")])
    raise CliError(f"docker volume {command}: not known to fixeduser explain; use --method/--uri")


def _on_containers(method: str, tail: str) -> Callable[[list[str]], Translation]:
    def translate(args: list[str]) -> Translation:
        names = [a for a in args if not a.startswith("-")]
        if not names:
            raise CliError("give a container name or ID")
        return Translation([ApiCall(method, _container_path(n, tail)) for n in names], containers=set(names))

    return translate


_COMMANDS: dict[str, Callable[[list[str]], Translation]] = {
    "run": lambda args: _run(args, start=True),
    "create": lambda args: _run(args, start=False),
    "exec": _exec,
    "volume": _volume,
    "start": _on_containers("POST", "/start"),
    "stop": _on_containers("POST", "/stop"),
    "restart": _on_containers("POST", "/restart"),
    "kill": _on_containers("POST", "/kill"),
    "rm": _on_containers("DELETE", ""),
    "logs": _on_containers("GET", "/logs?stderr=1&stdout=1"),
    "inspect": _on_containers("GET", "/json"),
    "ps": lambda args: Translation([ApiCall("GET", f"{API}/containers/json" + ("?all=1" if args else ""))]),
    "images": lambda _: Translation([ApiCall("GET", f"{API}/images/json")]),
    "info": lambda _: Translation([ApiCall("GET", f"{API}/info")]),
    "version": lambda _: Translation([ApiCall("GET", f"{API}/version")]),
}


def translate(argv: list[str]) -> Translation:
    """`docker ...` arguments (with or without the leading `docker`) as API requests."""
    args = argv[1:] if argv and argv[0] == "docker" else list(argv)
    if args[:1] == ["container"] and len(args) > 1:
        args = args[1:]  # docker container run ... == docker run ...
    if not args:
        raise CliError("no docker command given")
    translator = _COMMANDS.get(args[0])
    if translator is None:
        known = ", ".join(sorted(_COMMANDS))
        raise CliError(f"docker {args[0]}: not known to fixeduser explain (knows {known}); use --method/--uri")
    return translator(args[1:])
