"""Host installation with systemd: `fixeduser install` and `fixeduser uninstall`.

Everything is written below `root` (default `/`; tests use a scratch folder), and recorded in a
manifest (`/etc/fixeduser/install.json`) so that uninstall reverses exactly what install did:

- `fixeduser.service`, ordered before `docker.service` (a drop-in makes docker want it and start
  after it; ExecStartPost waits for the authz socket, since dockerd refuses to start without it).
  `KillMode=process`: the bindfs views are child processes that running containers still use;
  a restart of the plugin must not kill them.
- `/etc/fixeduser/serve.toml`: the settings `fixeduser serve --config` reads.
- `/etc/docker/daemon.json`: the authz plugin added to `authorization-plugins` (other keys kept,
  the original backed up once as `daemon.json.fixeduser-backup`); uninstall takes only it out again.
- FUSE: a udev rule giving `/dev/fuse` mode 0666 at every boot, `user_allow_other` in `/etc/fuse.conf`.
- The policy, state and storage folders with safe modes. They hold data: uninstall never removes
  them unless they are empty.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["InstallError", "InstallOptions", "install", "uninstall"]

MANIFEST = Path("etc/fixeduser/install.json")
UNIT = Path("etc/systemd/system/fixeduser.service")
DOCKER_DROPIN = Path("etc/systemd/system/docker.service.d/fixeduser.conf")
CONFIG = Path("etc/fixeduser/serve.toml")
DAEMON_JSON = Path("etc/docker/daemon.json")
UDEV_RULE = Path("etc/udev/rules.d/70-fixeduser-fuse.rules")
FUSE_CONF = Path("etc/fuse.conf")
FUSE_LINE = "user_allow_other"
BACKUP_SUFFIX = ".fixeduser-backup"


class InstallError(RuntimeError):
    """Something on the host prevents a safe install or uninstall; nothing was changed."""


@dataclass(frozen=True)
class InstallOptions:
    root: Path = Path("/")
    executable: Path = Path("/usr/local/bin/fixeduser")
    policy_dir: Path = Path("/etc/fixeduser/policies")
    state_dir: Path = Path("/var/lib/fixeduser")
    local_root: Path = Path("/srv/fixeduser/volumes")
    plugin_dir: Path = Path("/run/docker/plugins")
    authz_name: str = "fixeduser-authz"
    volume_name: str = "fixeduser"
    docker_host: str = "unix:///var/run/docker.sock"
    example_policy: Path | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)

    def at(self, path: Path) -> Path:
        """`path` (absolute, as on the running host) inside `root`."""
        return self.root / path.relative_to("/") if path.is_absolute() else self.root / path


def _toml_value(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def serve_config(options: InstallOptions) -> str:
    values = {
        "policy-dir": options.policy_dir,
        "state-dir": options.state_dir,
        "local-root": options.local_root,
        "plugin-dir": options.plugin_dir,
        "authz-name": options.authz_name,
        "volume-name": options.volume_name,
        "docker-host": options.docker_host,
    }
    lines = ["# Written by `fixeduser install`; read by `fixeduser serve --config`.", ""]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def unit_file(options: InstallOptions) -> str:
    socket = options.plugin_dir / f"{options.authz_name}.sock"
    extra = "".join(f" {arg}" for arg in options.extra_args)
    return f"""\
# Written by `fixeduser install`. dockerd asks this plugin about every API request, so it starts first.
[Unit]
Description=fixeduser: Docker authorization plugin and fixed-user volume driver
Documentation=man:dockerd(8)
Before=docker.service
After=local-fs.target systemd-udevd.service

[Service]
Type=simple
ExecStart={options.executable} serve --config /{CONFIG}{extra}
# dockerd refuses to start while the authz socket is missing: be "started" only once it listens.
ExecStartPost=/usr/bin/timeout 30 /bin/sh -c 'until [ -S "$0" ]; do sleep 0.1; done' {socket}
ExecReload=/bin/kill -HUP $MAINPID
# bindfs views are our children and running containers use them: a restart must leave them alone.
KillMode=process
Restart=always
RestartSec=1
UMask=0077

[Install]
WantedBy=multi-user.target
"""


DOCKER_DROPIN_TEXT = """\
# Written by `fixeduser install`: dockerd needs its authorization plugin running before it starts.
[Unit]
Wants=fixeduser.service
After=fixeduser.service
"""

UDEV_RULE_TEXT = """\
# Written by `fixeduser install`: bindfs runs as each storage identity (not root) and must open
# /dev/fuse; devtmpfs resets its mode to 0600 at every boot.
KERNEL=="fuse", MODE="0666"
"""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def _read_daemon_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as exc:
        raise InstallError(f"{path} is not valid JSON ({exc}); fix it first, nothing was changed") from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} must hold a JSON object")
    return data


def _mkdirs(options: InstallOptions, path: Path, mode: int, created: list[str]) -> None:
    """Create `path` (and missing parents, 0755) inside root; record what was new; set `mode` on it."""
    target = options.at(path)
    missing = [p for p in [target, *target.parents] if not p.exists() and options.root in p.parents]
    for new in reversed(missing):
        new.mkdir(mode=0o755)
        created.append(str(new.relative_to(options.root)))
    target.chmod(mode)


def _new_parents(options_root: Path, target: Path, created: list[str]) -> None:
    for parent in reversed([p for p in target.parents if options_root in p.parents and not p.exists()]):
        parent.mkdir(mode=0o755)
        created.append(str(parent.relative_to(options_root)))


def _install_folders(options: InstallOptions, manifest: dict[str, Any]) -> list[str]:
    _mkdirs(options, options.policy_dir, 0o755, manifest["dirs"])
    _mkdirs(options, options.state_dir, 0o700, manifest["dirs"])
    # bindfs runs as each identity: the storage folder must be traversable (o+x), never listable
    _mkdirs(options, options.local_root, 0o711, manifest["dirs"])
    for ancestor in options.at(options.local_root).parents:
        if ancestor == options.root or options.root not in ancestor.parents:
            break
        mode = stat.S_IMODE(ancestor.stat().st_mode)
        if not mode & 0o001 and str(ancestor.relative_to(options.root)) not in manifest["dirs"]:
            manifest["modes"][str(ancestor.relative_to(options.root))] = mode  # restored by uninstall
        ancestor.chmod(mode | 0o001)
    done = [
        f"folders: policies {options.policy_dir} (0755), state {options.state_dir} (0700), "
        f"storage {options.local_root} (0711)"
    ]
    policy_target = options.at(options.policy_dir)
    if options.example_policy is not None and not any(policy_target.iterdir()):
        for source in sorted(p for p in options.example_policy.iterdir() if p.is_file()):
            shutil.copy2(source, policy_target / source.name)
            (policy_target / source.name).chmod(0o644)
        done.append(f"example policy copied into {options.policy_dir}")
    return done


def _install_files(options: InstallOptions, manifest: dict[str, Any]) -> list[str]:
    done = []
    for relative, text in (
        (UNIT, unit_file(options)),
        (DOCKER_DROPIN, DOCKER_DROPIN_TEXT),
        (CONFIG, serve_config(options)),
        (UDEV_RULE, UDEV_RULE_TEXT),
    ):
        target = options.root / relative
        _new_parents(options.root, target, manifest["dirs"])
        _write(target, text)
        manifest["files"].append(str(relative))
        done.append(f"wrote /{relative}")
    return done


def _install_daemon_json(options: InstallOptions, existing: dict[str, Any] | None, manifest: dict[str, Any]) -> str:
    daemon_json = options.root / DAEMON_JSON
    data = dict(existing or {})
    plugins = list(data.get("authorization-plugins", []))
    if options.authz_name not in plugins:
        plugins.append(options.authz_name)
    data["authorization-plugins"] = plugins
    if existing is not None:
        backup = daemon_json.with_name(daemon_json.name + BACKUP_SUFFIX)
        if not backup.exists():
            shutil.copy2(daemon_json, backup)
            manifest["daemon_json"]["backup"] = str(backup.relative_to(options.root))
    else:
        _new_parents(options.root, daemon_json, manifest["dirs"])
    manifest["daemon_json"].update(created=existing is None, entry=options.authz_name)
    _write(daemon_json, json.dumps(data, indent=2) + "\n")
    return f"daemon.json: authorization-plugins = {plugins}"


def _install_fuse_conf(options: InstallOptions, manifest: dict[str, Any]) -> list[str]:
    fuse_conf = options.root / FUSE_CONF
    existed = fuse_conf.exists()
    text = fuse_conf.read_text(encoding="utf-8") if existed else ""
    if FUSE_LINE in (line.strip() for line in text.splitlines()):
        return []
    prefix = "" if not text or text.endswith("\n") else "\n"
    _write(fuse_conf, f"{text}{prefix}{FUSE_LINE}\n")
    manifest["fuse_line_added"] = True
    manifest["fuse_conf_original"] = text if existed else None
    return [f"added {FUSE_LINE} to /{FUSE_CONF}"]


def install(options: InstallOptions) -> list[str]:
    """Install into `options.root`; returns a human-readable list of what was done."""
    manifest_path = options.root / MANIFEST
    if manifest_path.exists():
        raise InstallError(f"already installed ({manifest_path} exists): run `fixeduser uninstall` first")
    for relative in (UNIT, DOCKER_DROPIN, CONFIG, UDEV_RULE):
        if (options.root / relative).exists():
            raise InstallError(f"{options.root / relative} exists and was not written by fixeduser install")
    existing = _read_daemon_json(options.root / DAEMON_JSON)  # refuse before changing anything
    manifest: dict[str, Any] = {"files": [], "dirs": [], "daemon_json": {}, "modes": {}, "fuse_line_added": False}
    done = _install_folders(options, manifest)
    done += _install_files(options, manifest)
    done.append(_install_daemon_json(options, existing, manifest))
    done += _install_fuse_conf(options, manifest)
    _write(manifest_path, json.dumps(manifest, indent=2) + "\n", mode=0o600)
    return done


def _uninstall_daemon_json(root: Path, record: dict[str, Any]) -> list[str]:
    daemon_json = root / DAEMON_JSON
    data = _read_daemon_json(daemon_json)
    backup = root / record["backup"] if record.get("backup") else None
    done = []
    if data is not None:
        plugins = [p for p in data.get("authorization-plugins", []) if p != record.get("entry")]
        if plugins:
            data["authorization-plugins"] = plugins
        else:
            data.pop("authorization-plugins", None)
        if backup is not None and backup.exists() and _read_daemon_json(backup) == data:
            shutil.copy2(backup, daemon_json)  # nothing else changed since: the original, byte for byte
        elif not data and record.get("created"):
            daemon_json.unlink()
        else:
            _write(daemon_json, json.dumps(data, indent=2) + "\n")
        done.append(f"daemon.json: {record.get('entry')} taken out of authorization-plugins")
    if backup is not None:
        backup.unlink(missing_ok=True)
    return done


def _uninstall_fuse_conf(root: Path, manifest: dict[str, Any]) -> list[str]:
    if not manifest.get("fuse_line_added"):
        return []
    fuse_conf = root / FUSE_CONF
    original: str | None = manifest.get("fuse_conf_original")
    current = fuse_conf.read_text(encoding="utf-8") if fuse_conf.exists() else None
    if current is None:
        return []
    if original is None and current.strip() == FUSE_LINE:
        fuse_conf.unlink()
    elif original is not None and current.startswith(original):
        rest = current[len(original) :].replace(f"{FUSE_LINE}\n", "", 1).lstrip("\n")
        _write(fuse_conf, original + rest)
    else:  # edited since: take out just our line
        _write(fuse_conf, "".join(x for x in current.splitlines(keepends=True) if x.strip() != FUSE_LINE))
    return [f"took {FUSE_LINE} out of /{FUSE_CONF}"]


def uninstall(root: Path = Path("/")) -> list[str]:
    """Reverse `install` below `root` using its manifest; volume data, state and policies stay."""
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InstallError(f"not installed: {manifest_path} is missing") from None
    done: list[str] = []
    for relative in manifest["files"]:
        (root / relative).unlink(missing_ok=True)
        done.append(f"removed /{relative}")
    done += _uninstall_daemon_json(root, manifest["daemon_json"])
    done += _uninstall_fuse_conf(root, manifest)
    manifest_path.unlink()
    for relative, mode in manifest.get("modes", {}).items():
        if (root / relative).is_dir():
            (root / relative).chmod(mode)
    for relative in sorted(manifest["dirs"], key=lambda d: d.count("/"), reverse=True):
        try:
            (root / relative).rmdir()  # only empty ones: data stays
        except OSError:
            done.append(f"kept /{relative} (not empty)")
    return done
