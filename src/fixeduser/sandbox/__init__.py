"""A real, private Docker daemon (and a fixeduser plugin process) for demos and end-to-end tests.

Plain classes and functions, no pytest fixtures: `fixeduser demo` and the tests' conftest wrap them. Everything a
`Dockerd` creates lives under its work directory (plus one short exec-root in the temp dir
when the work directory's path is long), it talks to no network range
(`--bridge=none --iptables=false --ip6tables=false`), listens on TCP only at 127.0.0.1,
and is stopped by its own PID. `stop()` also unmounts whatever the daemon left mounted
under its data-root and exec-root. An `Engine` says which dockerd and docker CLI to run: the
system's by default, or a newer one unpacked by `scripts/engines` (`available_engines()`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fixeduser.admin.certs import (
    KeyPair,
    issue_ca,
    issue_client_cert,
    issue_server_cert,
    write_client_bundle,
    write_server_bundle,
)
from fixeduser.app.settings import CONTROL_SOCKET_NAME
from fixeduser.linux.binaries import find_static_busybox
from fixeduser.linux.mounts import mounts_below
from fixeduser.linux.processes import stat_fields
from fixeduser.linux.unixhttp import UnixHTTPConnection, accepts_connections, unix_http_request

__all__ = [
    "BUSYBOX_APPLETS",
    "BUSYBOX_IMAGE",
    "CLIENT_ENV_DROP",
    "DEFAULT_USERS",
    "DockerCommandError",
    "Dockerd",
    "DockerdError",
    "Engine",
    "PluginProcess",
    "Stack",
    "TLSUsers",
    "available_engines",
    "build_busybox_rootfs",
    "clean_env",
    "docker_cli",
    "dockerd_available",
    "find_static_busybox",
    "free_port",
    "make_private_dir",
    "mounts_under",
    "pid_alive",
    "start_stack",
    "system_engine",
    "unix_http_request",
    "unmount_all_under",
]

BUSYBOX_IMAGE = "busybox:local"
BUSYBOX_APPLETS: tuple[str, ...] = (
    "sh", "id", "ls", "cat", "touch", "stat", "echo", "sleep", "mkdir", "rm", "chmod",
    "chown", "dd", "sync", "true", "false", "test", "head", "wc", "seq", "printf", "kill",
)  # fmt: skip
DEFAULT_USERS: tuple[str, ...] = ("alice", "bob", "carol")

CLIENT_ENV_DROP: tuple[str, ...] = (
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_TLS",
    "DOCKER_CERT_PATH",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_API_VERSION",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""Environment variables that would make a docker client talk to another daemon or trust
another CA; removed from every environment the harness builds."""

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; keep a margin
_MAX_EXEC_ROOT = 40  # containerd and shim sockets live a few levels below exec-root


class DockerdError(RuntimeError):
    """The daemon failed to start or to stop."""


class DockerCommandError(subprocess.CalledProcessError):
    """A `docker` CLI command failed (raised by `Dockerd.docker(..., check=True)`)."""

    def __init__(self, result: subprocess.CompletedProcess[str], user: str | None) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.user = user

    def __str__(self) -> str:
        who = f"as {self.user!r} over TLS" if self.user else "over the unix socket"
        return f"{' '.join(map(str, self.cmd))} {who} exited with {self.returncode}:\n{(self.stderr or '').strip()}"


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the docker/CA variables of `CLIENT_ENV_DROP`,
    with a PATH that includes the sbin directories, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROP}
    path = env.get("PATH", "")
    missing = [p for p in _SYSTEM_PATH.split(":") if p not in path.split(":")]
    env["PATH"] = ":".join([p for p in (path, *missing) if p])
    if extra:
        env.update(extra)
    return env


def docker_cli() -> str:
    """Path of the `docker` CLI (the first on PATH)."""
    found = shutil.which("docker", path=clean_env()["PATH"])
    if found is None:
        raise DockerdError("the docker CLI is not installed")
    return found


def dockerd_available() -> bool:
    """True when running as root with dockerd, containerd, runc and the docker CLI installed."""
    path = clean_env()["PATH"]
    return os.geteuid() == 0 and all(shutil.which(b, path=path) for b in ("dockerd", "containerd", "runc", "docker"))


# --------------------------------------------------------------------------- engines

ENGINES_DIR = Path(os.environ.get("FIXEDUSER_ENGINES_DIR", "/var/cache/fixeduser/engines"))
"""Where `scripts/engines` unpacks newer Debian docker.io packages, one `<suite>/root` each."""


@dataclass(frozen=True)
class Engine:
    """A Docker engine the sandbox can run: its dockerd, docker CLI and docker-compose (if any).

    Every engine uses the host's containerd and runc; `name` is dockerd's major.minor ("26.1").
    """

    name: str
    version: str
    dockerd: Path
    docker: Path
    compose: Path | None = None

    def __str__(self) -> str:
        return self.name

    @property
    def release(self) -> tuple[int, int]:
        """(major, minor), for comparisons: `engine.release >= (26, 1)`."""
        major, minor = self.name.split(".")
        return int(major), int(minor)

    @property
    def search_path(self) -> str:
        """PATH for this engine's processes: its own folders first (its docker-proxy, docker-compose), then
        the host's (containerd, runc, docker-init)."""
        own = dict.fromkeys(str(p.parent) for p in (self.dockerd, self.docker))
        return ":".join([*own, clean_env()["PATH"]])


@functools.cache
def _dockerd_version(dockerd: Path) -> str:
    """`26.1.5+dfsg1` from `Docker version 26.1.5+dfsg1, build 411e817`."""
    out = subprocess.run([dockerd, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    match = re.search(r"version (\S+?),", out)
    if match is None:
        raise DockerdError(f"{dockerd} --version said {out!r}")
    return match.group(1)


def _engine(dockerd: Path, docker: Path, compose: Path | None) -> Engine:
    version = _dockerd_version(dockerd)
    return Engine(".".join(version.split(".")[:2]), version, dockerd, docker, compose)


def system_engine() -> Engine:
    """The host's engine: the dockerd, docker CLI and docker-compose found on PATH."""
    path = clean_env()["PATH"]
    dockerd, docker = shutil.which("dockerd", path=path), shutil.which("docker", path=path)
    if dockerd is None or docker is None:
        raise DockerdError("dockerd or the docker CLI is not installed")
    compose = shutil.which("docker-compose", path=path)
    return _engine(Path(dockerd), Path(docker), Path(compose) if compose else None)


def available_engines(engines_dir: Path = ENGINES_DIR) -> list[Engine]:
    """The system engine (if installed) and every engine unpacked under `engines_dir`, oldest first,
    one per name."""
    found: dict[str, Engine] = {}
    with contextlib.suppress(DockerdError):
        system = system_engine()
        found[system.name] = system
    for root in sorted(engines_dir.glob("*/root")):
        dockerd, docker, compose = root / "usr/sbin/dockerd", root / "usr/bin/docker", root / "usr/bin/docker-compose"
        if dockerd.is_file() and docker.is_file():
            engine = _engine(dockerd, docker, compose if compose.exists() else None)
            found.setdefault(engine.name, engine)
    return sorted(found.values(), key=lambda engine: engine.release)


def _temp_root() -> Path:
    return Path(tempfile.gettempdir()).resolve()


def make_private_dir(base: Path, prefix: str = "fud-") -> Path:
    """A new directory below `base` that other uids can traverse but not list.

    The new directory gets mode 0711; `base` and every ancestor of it that lies below the
    temp root (e.g. pytest's 0700 `/tmp/pytest-of-root`) get `o+x` added, so a FUSE daemon
    running as an unprivileged uid can reach paths under the new directory.
    """
    base.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=prefix, dir=base)).resolve()
    new.chmod(0o711)
    root = _temp_root()
    for ancestor in new.parents:
        if ancestor == root or root not in ancestor.parents:
            break
        mode = stat.S_IMODE(ancestor.stat().st_mode)
        if mode & 0o001 == 0:
            ancestor.chmod(mode | 0o001)
    # a base outside the temp root: only the base itself is opened for traversal
    if root not in new.parents:
        parent = new.parent
        parent.chmod(stat.S_IMODE(parent.stat().st_mode) | 0o001)
    return new


# --------------------------------------------------------------------------- busybox image


def build_busybox_rootfs(dest: Path, *, applets: Iterable[str] = BUSYBOX_APPLETS) -> Path:
    """Build a busybox root file system under `dest/rootfs` and pack it as `dest/busybox.tar`.

    The tar (owned by root, for `docker import`) holds `bin/busybox` with one symlink per
    applet, empty `etc/` and `data/`, and `tmp/` with mode 1777. Returns the tar's path.
    """
    busybox = find_static_busybox()
    rootfs = dest / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    (rootfs / "bin").mkdir(parents=True)
    for name in ("etc", "data", "tmp"):
        (rootfs / name).mkdir()
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "busybox").chmod(0o755)
    for applet in dict.fromkeys(applets):
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    tar_path = dest / "busybox.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(rootfs.iterdir()):
            tar.add(child, arcname=child.name, filter=as_root)
    return tar_path


# --------------------------------------------------------------------------- TLS users


class TLSUsers:
    """A private CA, a server certificate for 127.0.0.1 and one client bundle per user.

    Layout under `directory`: `server/{ca,server,server-key}.pem` and
    `clients/<user>/{ca,cert,key}.pem` (a `DOCKER_CERT_PATH`).
    """

    def __init__(self, directory: Path, users: Sequence[str] = DEFAULT_USERS) -> None:
        self.directory = directory
        self.ca: KeyPair = issue_ca("fixeduser test CA")
        self.server: KeyPair = issue_server_cert(self.ca, hosts=["127.0.0.1", "localhost"])
        self.server_dir = directory / "server"
        write_server_bundle(self.ca, self.server, self.server_dir)
        self._bundles: dict[str, Path] = {}
        for user in users:
            self.add_user(user)

    @property
    def users(self) -> list[str]:
        return list(self._bundles)

    @property
    def ca_pem(self) -> Path:
        return self.server_dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.server_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.server_dir / "server-key.pem"

    def add_user(self, user: str) -> Path:
        """Issue a client certificate with CN `user`; return its bundle directory."""
        bundle = self.directory / "clients" / user
        write_client_bundle(self.ca, issue_client_cert(self.ca, user), bundle)
        self._bundles[user] = bundle
        return bundle

    def bundle(self, user: str) -> Path:
        """The `DOCKER_CERT_PATH` directory of `user` (`ca.pem`, `cert.pem`, `key.pem`)."""
        try:
            return self._bundles[user]
        except KeyError:
            raise KeyError(f"no TLS bundle for user {user!r}; known: {self.users}") from None


# --------------------------------------------------------------------------- mounts


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace, deepest first."""
    return [entry.mount_point for entry in mounts_below(path)]


def unmount_all_under(paths: Iterable[Path], *, attempts: int = 5) -> list[str]:
    """Lazily unmount (`umount -l`) everything at or below `paths`, deepest first.

    Returns the mount points that are still mounted afterwards (empty on success).
    """
    remaining: list[str] = []
    for _ in range(attempts):
        remaining = sorted(
            {m for p in paths for m in mounts_under(p)},
            key=lambda m: (m.count("/"), len(m)),
            reverse=True,
        )
        if not remaining:
            return []
        for mount_point in remaining:
            subprocess.run(
                ["umount", "-l", mount_point],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=30,
            )
    return sorted({m for p in paths for m in mounts_under(p)})


# --------------------------------------------------------------------------- the daemon


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie, or a process being reaped, is dead for our purposes."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid) or []
    return bool(fields) and fields[0] not in ("Z", "X")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((stat_fields(int(entry.name)) or [])[1])
        except (IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, []))
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0") if a]


class Dockerd:
    """A private dockerd: own data-root, exec-root, pidfile and unix socket under `workdir`.

    With `tls`, it also listens on `tcp://127.0.0.1:<port>` with `--tlsverify`; `docker(...,
    user=NAME)` then connects as that user (the certificate CN dockerd passes to authz
    plugins as `User`). `docker(...)` without a user uses the unix socket: a local
    root-equivalent caller, for which authz plugins see no `User`.

    `api_version` pins the CLI's API version (`DOCKER_API_VERSION`): the docker CLI learns
    the daemon's version from `/_ping`, so if an authz plugin denies `/_ping` an unpinned
    CLI 28 talks API 1.50 and a 20.10 daemon (max 1.41) refuses every request.
    `server_api_version` is the version the daemon announced in its ping during `start()`
    (None if the ping was denied).

    `engine` picks the dockerd and docker CLI (default: the system engine, see `system_engine`).

    `authz_in_config`: name the authz plugin in the daemon's config file, as `fixeduser install` does,
    instead of with the `--authorization-plugin` flag (which a reload drops, see `reload`).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        authz_plugin: str | None = None,
        authz_in_config: bool = False,
        tls: TLSUsers | None = None,
        extra_args: Sequence[str] = (),
        shutdown_timeout: int = 3,
        api_version: str | None = None,
        engine: Engine | None = None,
        plugin_specs: Path | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.plugin_specs = plugin_specs
        self._engine = engine
        self.authz_plugin = authz_plugin
        self.authz_in_config = authz_in_config
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.shutdown_timeout = shutdown_timeout
        self.api_version = api_version
        self.server_api_version: str | None = None
        self.data_root = self.workdir / "data"
        self.pidfile = self.workdir / "docker.pid"
        self.log_path = self.workdir / "dockerd.log"
        self.config_file = self.workdir / "daemon.json"
        self.client_config = self.workdir / "client-config"
        self._short_dir: Path | None = None
        self.exec_root = self.workdir / "exec"
        self.socket_path = self.workdir / "docker.sock"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.start_seconds: float | None = None
        self._busybox_imported = False

    # ----------------------------------------------------------------- paths and env

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = system_engine()
        return self._engine

    @property
    def host(self) -> str:
        """`unix://...` address of the daemon's unix socket."""
        return f"unix://{self.socket_path}"

    @property
    def tcp_host(self) -> str:
        if self.port is None:
            raise DockerdError("this daemon has no TCP listener (started without tls)")
        return f"tcp://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        """Create the work directories and settle socket paths (also done by `start`)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        long_exec = len(str(self.workdir / "exec")) > _MAX_EXEC_ROOT
        long_sock = len(str(self.workdir / "docker.sock")) > _MAX_SOCKET_PATH
        if (long_exec or long_sock) and self._short_dir is None:
            self._short_dir = Path(tempfile.mkdtemp(prefix="fud-", dir="/tmp"))
        if long_exec:
            assert self._short_dir is not None
            self.exec_root = self._short_dir / "x"
        if long_sock:
            assert self._short_dir is not None
            self.socket_path = self._short_dir / "docker.sock"
        for leftover in (self.socket_path, self.pidfile):
            leftover.unlink(missing_ok=True)
        self.data_root.mkdir(exist_ok=True)
        self.client_config.mkdir(exist_ok=True)
        self.client_config.chmod(0o700)
        (self.client_config / "config.json").write_text("{}\n")
        # a private daemon config: do not read the host's /etc/docker/daemon.json
        self.config_file.write_text(json.dumps(self._config()) + "\n")

    def _config(self) -> dict[str, Any]:
        if self.authz_plugin is not None and self.authz_in_config:
            return {"authorization-plugins": [self.authz_plugin]}
        return {}

    def reload(self, **settings: Any) -> None:
        """Reload the daemon's configuration (SIGHUP, as `systemctl reload docker`) with `settings` added to its
        config file."""
        if self.pid is None:
            raise DockerdError("reload: the daemon is not running")
        self.config_file.write_text(json.dumps({**self._config(), **settings}) + "\n")
        os.kill(self.pid, signal.SIGHUP)

    def cli_env(self) -> dict[str, str]:
        """Environment for docker clients: no DOCKER_HOST/TLS/CA variables, private config."""
        env = clean_env({"DOCKER_CONFIG": str(self.client_config)})
        if self.api_version is not None:
            env["DOCKER_API_VERSION"] = self.api_version
        return env

    def cli_args(self, user: str | None = None) -> list[str]:
        """Global `docker` CLI options that connect as `user` (None: over the unix socket)."""
        if user is None:
            return ["-H", self.host]
        if self.tls is None:
            raise DockerdError("connecting as a user needs a daemon started with tls")
        bundle = self.tls.bundle(user)
        return [
            "--tlsverify",
            "--tlscacert", str(bundle / "ca.pem"),
            "--tlscert", str(bundle / "cert.pem"),
            "--tlskey", str(bundle / "key.pem"),
            "-H", self.tcp_host,
        ]  # fmt: skip

    def _command(self) -> list[str]:
        cmd = [
            str(self.engine.dockerd),
            "--config-file", str(self.config_file),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            "-H", self.host,
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--shutdown-timeout={self.shutdown_timeout}",
        ]  # fmt: skip
        if self.tls is not None:
            assert self.port is not None
            cmd += [
                "-H", f"tcp://127.0.0.1:{self.port}",
                "--tlsverify",
                "--tlscacert", str(self.tls.ca_pem),
                "--tlscert", str(self.tls.server_cert),
                "--tlskey", str(self.tls.server_key),
            ]  # fmt: skip
        if self.authz_plugin is not None and not self.authz_in_config:
            cmd.append(f"--authorization-plugin={self.authz_plugin}")
        cmd += self.extra_args
        if self.plugin_specs is not None:
            cmd = self._with_own_plugin_specs(cmd)
        return cmd

    def _with_own_plugin_specs(self, cmd: list[str]) -> list[str]:
        """Run dockerd in a mount namespace of its own in which `plugin_specs` is /etc/docker/plugins: it finds only
        its own plugins, as on a host of its own (two "hosts" on one machine would otherwise each use the other's
        volume driver too). Mounts made on the host later (the plugin's views) still reach it (slave propagation);
        the shell `exec`s dockerd, so `pid` stays dockerd's."""
        assert self.plugin_specs is not None
        SPEC_DIR.mkdir(parents=True, exist_ok=True)
        script = 'mount --bind "$0" /etc/docker/plugins && exec "$@"'
        return ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script, str(self.plugin_specs), *cmd]

    # ----------------------------------------------------------------- lifecycle

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _launch_output(self, head: int = 5, tail: int = 40) -> str:
        """What the last launch wrote: its first lines (the error; dockerd 28 prints its usage after
        it) and its last lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        lines = text.rsplit("\n=== ", 1)[-1].splitlines()[1:]
        if len(lines) > head + tail:
            lines = [*lines[:head], "...", *lines[-tail:]]
        return "\n".join(lines)

    def start(self, timeout: float = 30) -> Self:
        """Launch dockerd and wait until its unix socket answers `/_ping`.

        Any HTTP answer counts (an authz plugin may deny `/_ping`); raises `DockerdError`
        with the log tail if the daemon exits or `timeout` passes.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise DockerdError(f"dockerd already running as pid {self.proc.pid}")
        attempts = 3 if self.tls is not None else 1
        for attempt in range(attempts):
            self.prepare()
            if self.tls is not None:
                self.port = free_port()
            try:
                self._launch_and_wait(timeout)
                return self
            except DockerdError:
                port_taken = "address already in use" in self.log_tail(10)
                if not (port_taken and attempt + 1 < attempts):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch_and_wait(self, timeout: float) -> None:
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self._command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env({"PATH": self.engine.search_path}),
                cwd=self.workdir,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        atexit.register(self._atexit_stop)
        deadline = began + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._cleanup_after_exit()
                raise DockerdError(f"dockerd exited with status {code}:\n{self._launch_output()}")
            if self._answers_ping():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise DockerdError(f"dockerd not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        if self.port is not None:
            while not self._tcp_open():
                if time.monotonic() > deadline:
                    self.stop()
                    raise DockerdError(f"TCP port {self.port} not listening:\n{self.log_tail()}")
                time.sleep(0.05)
        self.start_seconds = time.monotonic() - began

    def _answers_ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        conn = UnixHTTPConnection(str(self.socket_path), 2.0)
        try:
            conn.request("GET", "/_ping", headers={"Host": "docker"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        # absent when an authz plugin denied the ping
        self.server_api_version = response.getheader("Api-Version") or self.server_api_version
        return True

    def _tcp_open(self) -> bool:
        assert self.port is not None
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def ping(self) -> tuple[int, bytes]:
        """`GET /_ping` over the unix socket: (status, body)."""
        return unix_http_request(self.socket_path, "GET", "/_ping")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20, *, container_grace: float | None = 1.0) -> None:
        """Stop the daemon and clean up what it left behind. Safe to call more than once.

        Sends SIGTERM to the daemon's own PID. dockerd then stops running containers, giving
        each its stop timeout (10 s by default); to keep tests fast, container processes that
        are still alive `container_grace` seconds after the SIGTERM get SIGKILL (None: wait
        for dockerd). The daemon gets SIGKILL if it has not exited after `timeout` s; then its
        containerd and shims (matched by this daemon's containerd socket) are killed, and
        everything still mounted under its data-root and exec-root is unmounted.
        """
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            try:
                if container_grace is not None:
                    try:
                        proc.wait(timeout=min(container_grace, timeout))
                    except subprocess.TimeoutExpired:
                        self._kill_pids(self._own_leftover_pids(containers_only=True))
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        self._cleanup_after_exit()
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit_stop)

    @staticmethod
    def _kill_pids(pids: Iterable[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _own_leftover_pids(self, *, containers_only: bool = False) -> list[int]:
        """Processes started for this daemon that are still alive: its containerd, the
        shims that talk to that containerd (matched by its exact socket path) and the
        container processes below them (only those with `containers_only`)."""
        address = str(self.exec_root / "containerd" / "containerd.sock")
        shims: list[int] = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                args = _cmdline(int(entry.name))
                if "-address" in args and address in args:
                    shims.append(int(entry.name))
        children = _children_map()
        pids: list[int] = []
        for shim in shims:
            pids += _descendants(shim, children)
        if containers_only:
            return pids
        pids += shims
        with contextlib.suppress(OSError, ValueError):
            pidfile = self.exec_root / "containerd" / "containerd.pid"
            containerd = int(pidfile.read_text().strip())
            if pid_alive(containerd) and any(str(self.exec_root) in a for a in _cmdline(containerd)):
                pids.append(containerd)
        return pids

    def _cleanup_after_exit(self) -> None:
        self._kill_pids(self._own_leftover_pids())
        roots = [self.data_root, self.exec_root]
        if self._short_dir is not None:
            roots.append(self._short_dir)
        still = unmount_all_under(roots)
        if still:
            raise DockerdError(f"mounts left under {self.workdir}: {still}")
        if self._short_dir is not None and not mounts_under(self._short_dir):
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None
            self.exec_root = self.workdir / "exec"
            self.socket_path = self.workdir / "docker.sock"

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- clients

    def docker(
        self,
        *args: str,
        user: str | None = None,
        check: bool = False,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `docker` CLI against this daemon, as `user` over TLS or (None) over
        the unix socket. Output is captured as text."""
        result = subprocess.run(
            [str(self.engine.docker), *self.cli_args(user), *args],
            env=self.cli_env(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise DockerCommandError(result, user)
        return result

    def import_busybox(self, tag: str = BUSYBOX_IMAGE) -> str:
        """Import the busybox rootfs as `tag` over the unix socket; returns the tag."""
        tar = build_busybox_rootfs(self.workdir / "busybox")
        result = self.docker("import", str(tar), tag, timeout=120)
        if result.returncode != 0:
            raise DockerdError(f"docker import failed: {result.stderr}\n{self.log_tail()}")
        self._busybox_imported = True
        return tag


# --------------------------------------------------------------------------- plugin process


SPEC_DIR = Path("/etc/docker/plugins")


@dataclass
class PluginProcess:
    """`fixeduser serve` in its own process, with private sockets and unique plugin names."""

    base: Path
    authz_name: str
    volume_name: str
    docker_socket: Path
    policy_dir: Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    spec_dir: Path = SPEC_DIR

    @property
    def local_root(self) -> Path:
        return self.base / "volumes"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def log_path(self) -> Path:
        return self.base / "plugin.log"

    @property
    def plugin_dir(self) -> Path:
        """Where the sockets go: under `base`, or a short temp dir when that path is too long."""
        preferred = self.base / "plugins"
        if len(str(preferred / f"{self.authz_name}.sock")) <= _MAX_SOCKET_PATH:
            return preferred
        short = Path(tempfile.gettempdir()) / f"fup-{self.authz_name}"
        short.mkdir(mode=0o700, exist_ok=True)
        return short

    @property
    def audit_path(self) -> Path:
        return self.base / "audit.jsonl"

    def start(self, timeout: float = 20) -> None:
        argv = [
            sys.executable, "-m", "fixeduser", "serve",
            "--policy-dir", str(self.policy_dir),
            "--state-dir", str(self.state_dir),
            "--plugin-dir", str(self.plugin_dir),
            "--spec-dir", str(self.spec_dir),
            "--authz-name", self.authz_name,
            "--volume-name", self.volume_name,
            "--local-root", str(self.local_root),
            "--docker-host", f"unix://{self.docker_socket}",
            "--audit-log", str(self.audit_path),
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        # Spec files can be left over from a killed run: wait until the sockets accept connections. The control
        # socket starts last: started means `fixeduser status` answers too.
        sockets = [self.plugin_dir / f"{name}.sock" for name in (self.authz_name, self.volume_name)]
        sockets.append(self.state_dir / CONTROL_SOCKET_NAME)
        specs = [self.spec_dir / f"{name}.spec" for name in (self.authz_name, self.volume_name)]
        while not (all(spec.exists() for spec in specs) and all(accepts_connections(sock) for sock in sockets)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fixeduser serve did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        """Crash the plugin (SIGKILL to its own PID), leaving its state and mounts as they are."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def remove_specs(self) -> None:
        """Remove the spec files and the (then empty) socket folder."""
        for name in (self.authz_name, self.volume_name):
            (self.spec_dir / f"{name}.spec").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.plugin_dir.rmdir()


@dataclass
class Stack:
    """A fixeduser plugin process and a private TLS dockerd that uses it as authz plugin and driver."""

    plugin: PluginProcess
    dockerd: Dockerd

    @property
    def driver(self) -> str:
        return self.plugin.volume_name

    def docker(self, *args: str, user: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.dockerd.docker(*args, user=user, timeout=timeout)

    def stop(self) -> list[str]:
        """Stop the daemon, then the plugin, by their own PIDs; unmount what is left. Returns leftovers."""
        try:
            self.dockerd.stop()
        finally:
            self.plugin.stop()
            self.plugin.remove_specs()
        return unmount_all_under([self.plugin.base])


def _share_mounts_below(folder: Path) -> None:
    """Make `folder` a shared mount point (a bind mount onto itself), so mounts made below it later reach the mount
    namespaces that copied it as slaves (see `Dockerd.plugin_specs`); `Stack.stop` unmounts it with the rest."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True, capture_output=True)
    subprocess.run(["mount", "--make-shared", str(folder)], check=True, capture_output=True)


def start_stack(
    base: Path,
    *,
    policy_dir: Path,
    users: Sequence[str] = DEFAULT_USERS,
    prefix: str = "fu",
    extra_args: Sequence[str] = (),
    engine: Engine | None = None,
    own_plugin_specs: bool = False,
    authz_in_config: bool = False,
) -> Stack:
    """Start `fixeduser serve` with unique plugin names, then a TLS dockerd of `engine` (default: the
    system's) using it, then import busybox. `own_plugin_specs`: the daemon sees only this stack's plugins (see
    `Dockerd.plugin_specs`), for several "hosts" on one machine. `authz_in_config`: the daemon finds its authz plugin
    in its config file, as after `fixeduser install`, instead of in its `--authorization-plugin` flag."""
    from fixeduser.volumes.backends.local import prepare_host_for_fuse  # noqa: PLC0415 - root-only helper

    prepare_host_for_fuse()
    tag = secrets.token_hex(3)
    tls = TLSUsers(base / "tls", users=users)
    specs = make_private_dir(base, prefix="specs-") if own_plugin_specs else SPEC_DIR
    dockerd = Dockerd(base / "dockerd", authz_plugin=f"{prefix}-{tag}-authz", tls=tls, engine=engine,
                      plugin_specs=specs if own_plugin_specs else None, authz_in_config=authz_in_config)  # fmt: skip
    dockerd.prepare()  # settles the socket path the plugin queries
    plugin = PluginProcess(
        base=base,
        authz_name=f"{prefix}-{tag}-authz",
        volume_name=f"{prefix}-{tag}",
        docker_socket=dockerd.socket_path,
        policy_dir=policy_dir,
        extra_args=tuple(extra_args),
        spec_dir=specs,
    )
    stack = Stack(plugin, dockerd)
    try:
        if own_plugin_specs:
            _share_mounts_below(plugin.state_dir / "mnt")  # the plugin's views, seen by the daemon's namespace
        plugin.start()
        dockerd.start()
        dockerd.import_busybox()
    except BaseException:
        stack.stop()
        raise
    return stack
