"""One real stack for the end-to-end suite: fixeduser serve + a private TLS dockerd using it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixeduser.sandbox import (
    Dockerd,
    PluginProcess,
    TLSUsers,
    dockerd_available,
    make_private_dir,
    unmount_all_under,
)
from fixeduser.volumes.backends.local import prepare_host_for_fuse

REPO = Path(__file__).resolve().parents[2]


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
    dockerd.prepare()  # settles the socket path the plugin must query
    plugin = PluginProcess(
        base=base,
        authz_name=f"fu-{tag}-authz",
        volume_name=f"fu-{tag}",
        docker_socket=dockerd.socket_path,
        policy_source=REPO / "policies",
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
