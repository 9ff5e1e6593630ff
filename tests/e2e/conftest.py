"""One real stack for the end-to-end suite: fixeduser serve + a private TLS dockerd using it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixeduser.volumes.backends.local import prepare_host_for_fuse

from .harness import Dockerd, TLSUsers, dockerd_available, make_private_dir, unmount_all_under

REPO = Path(__file__).resolve().parents[2]
SPEC_DIR = Path("/etc/docker/plugins")


def _e2e_possible() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not dockerd_available() or shutil.which("bindfs") is None:
        return "needs dockerd and bindfs (run scripts/setup)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _e2e_possible()
    for item in items:
        if "e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class PluginProcess:
    """`fixeduser serve` in its own process, with private sockets and unique plugin names."""

    base: Path
    authz_name: str
    volume_name: str
    docker_socket: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def policy_dir(self) -> Path:
        return self.base / "policies"

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
    def audit_path(self) -> Path:
        return self.base / "audit.jsonl"

    def start(self, timeout: float = 20) -> None:
        if not self.policy_dir.exists():
            shutil.copytree(REPO / "policies", self.policy_dir)
        argv = [
            sys.executable, "-m", "fixeduser", "serve",
            "--policy-dir", str(self.policy_dir),
            "--state-dir", str(self.state_dir),
            "--plugin-dir", str(self.base / "plugins"),
            "--spec-dir", str(SPEC_DIR),
            "--authz-name", self.authz_name,
            "--volume-name", self.volume_name,
            "--local-root", str(self.local_root),
            "--docker-host", f"unix://{self.docker_socket}",
            "--audit-log", str(self.audit_path),
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        specs = [SPEC_DIR / f"{name}.spec" for name in (self.authz_name, self.volume_name)]
        while not all(spec.exists() for spec in specs):
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
        for name in (self.authz_name, self.volume_name):
            (SPEC_DIR / f"{name}.spec").unlink(missing_ok=True)


@dataclass
class Stack:
    plugin: PluginProcess
    dockerd: Dockerd

    @property
    def driver(self) -> str:
        return self.plugin.volume_name

    def docker(self, *args: str, user: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.dockerd.docker(*args, user=user, timeout=timeout)

    def ok(self, *args: str, user: str | None = None, timeout: float = 90) -> str:
        result = self.docker(*args, user=user, timeout=timeout)
        assert result.returncode == 0, (
            f"docker {' '.join(args)} as {user or '@local'} failed:\n{result.stderr}\n"
            f"--- plugin log ---\n{self.plugin.log_tail()}"
        )
        return result.stdout

    def denied(self, *args: str, user: str | None = None) -> str:
        result = self.docker(*args, user=user)
        assert result.returncode != 0, f"docker {' '.join(args)} as {user} should have failed:\n{result.stdout}"
        return result.stderr


def start_stack(base: Path) -> Stack:
    prepare_host_for_fuse()
    tag = secrets.token_hex(3)
    daemon_dir = base / "dockerd"
    tls = TLSUsers(base / "tls", users=("alice", "bob", "carol", "dave", "@local"))
    dockerd = Dockerd(daemon_dir, authz_plugin=f"fu-{tag}-authz", tls=tls)
    dockerd._prepare_paths()  # settles the socket path the plugin must query
    plugin = PluginProcess(
        base=base, authz_name=f"fu-{tag}-authz", volume_name=f"fu-{tag}", docker_socket=dockerd.socket_path
    )
    try:
        plugin.start()
        dockerd.start()
        dockerd.import_busybox()
    except BaseException:
        stop_stack(Stack(plugin, dockerd))
        raise
    return Stack(plugin, dockerd)


def stop_stack(stack: Stack) -> list[str]:
    """Stop the daemon, then the plugin, by their own PIDs; unmount what is left. Returns leftovers."""
    try:
        stack.dockerd.stop()
    finally:
        stack.plugin.stop()
        stack.plugin.remove_specs()
    return unmount_all_under([stack.plugin.base])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = make_private_dir(tmp_path_factory.mktemp("e2e"))
    running = start_stack(base)
    try:
        yield running
    finally:
        stop_stack(running)
