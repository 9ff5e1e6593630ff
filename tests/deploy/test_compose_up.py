"""`docker-compose up` of the top-level docker-compose.yml, for real, with no registry.

Daemon A (private, no authz) builds the image with deploy/compose/build-image and runs the compose
service with exactly the file's privileges. The container publishes its sockets into a private
plugin folder; daemon B (private, TLS users) starts with `--authorization-plugin` naming that socket
(spec files in /etc/docker/plugins, unique names) and uses the container's volume driver. alice's
file then belongs to her fixed identity on the storage: the bindfs view was mounted inside the
container and reached B's containers through the rshared state folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixeduser.linux.mounts import mounts_below
from fixeduser.sandbox import (
    SPEC_DIR,
    Dockerd,
    Engine,
    TLSUsers,
    clean_env,
    dockerd_available,
    make_private_dir,
    mounts_under,
    unix_http_request,
    unmount_all_under,
)
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
BUILD_IMAGE = REPO / "deploy" / "compose" / "build-image"
# the compose file's cap_add, as the kernel names them (CapEff of the container's process)
EXPECTED_CAPS = {"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"}
CAP_BITS = {
    0: "CAP_CHOWN", 1: "CAP_DAC_OVERRIDE", 2: "CAP_DAC_READ_SEARCH", 3: "CAP_FOWNER", 4: "CAP_FSETID",
    5: "CAP_KILL", 6: "CAP_SETGID", 7: "CAP_SETUID", 8: "CAP_SETPCAP", 10: "CAP_NET_BIND_SERVICE",
    12: "CAP_NET_ADMIN", 13: "CAP_NET_RAW", 18: "CAP_SYS_CHROOT", 19: "CAP_SYS_PTRACE", 21: "CAP_SYS_ADMIN",
    27: "CAP_MKNOD", 29: "CAP_AUDIT_WRITE", 31: "CAP_SETFCAP",
}  # fmt: skip
ALICE, BOB = (10001, 10000), (10002, 10000)  # policies/policy.csv: p2 lines


def _impossible() -> str | None:
    if os.geteuid() != 0 or not dockerd_available():
        return "needs root and dockerd"
    missing = [tool for tool in ("docker-compose", "bindfs", "fusermount3") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)} (scripts/setup)" if missing else None


pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_impossible() is not None, reason=_impossible() or "")]


@dataclass
class Deployment:
    """Daemon A running the compose service, daemon B authorized by it, and the private host folders."""

    base: Path
    a: Dockerd
    b: Dockerd
    project: str
    env: dict[str, str]
    driver: str
    compose_cli: Path

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def storage(self) -> Path:
        return self.base / "volumes"

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.compose_cli), "-f", str(COMPOSE_FILE), "-p", self.project, *args],
            env=self.env, capture_output=True, text=True, check=False, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def container_id(self) -> str:
        result = self.compose("ps", "-q", "fixeduser")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def inspect(self) -> dict[str, object]:
        out = self.a.docker("inspect", self.container_id(), check=True).stdout
        found: dict[str, object] = json.loads(out)[0]
        return found

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40").stdout

    def on_b(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.b.docker(*args, user=user, timeout=120)

    def ok_on_b(self, *args: str, user: str | None = None) -> str:
        result = self.on_b(*args, user=user)
        assert result.returncode == 0, f"docker {' '.join(args)} as {user}: {result.stderr}\n{self.logs()}"
        return result.stdout


def _host_layout(base: Path) -> dict[str, Path]:
    """Private stand-ins for the compose file's host paths. The state folder is made a shared mount
    (its own bind mount), as `/` is on systemd hosts: rshared needs a shared source."""
    paths = {name: base / name for name in ("policies", "state", "volumes", "plugins")}
    shutil.copytree(REPO / "policies", paths["policies"])
    for name in ("state", "volumes", "plugins"):
        paths[name].mkdir(mode=0o711)
        paths[name].chmod(0o711)
    subprocess.run(["mount", "--bind", str(paths["state"]), str(paths["state"])], check=True)
    subprocess.run(["mount", "--make-shared", str(paths["state"])], check=True)
    return paths


def _write_specs(names: list[str], plugins: Path) -> list[Path]:
    """Spec files for daemon B: each name points at the socket the container creates in `plugins`."""
    specs = []
    for name in names:
        spec = SPEC_DIR / f"{name}.spec"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(f"unix://{plugins / name}.sock\n")
        specs.append(spec)
    return specs


def _start(deployment: Deployment, paths: dict[str, Path], authz: str) -> None:
    """Build on A, then start B and the compose service together: B opens its API socket (which the
    compose file mounts) before it waits up to 30 s for its authorization plugin to answer."""
    built = subprocess.run(
        [str(BUILD_IMAGE), str(deployment.base / "image")],
        env=deployment.env, capture_output=True, text=True, check=False, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert built.returncode == 0, f"build-image failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}"
    _write_specs([authz, deployment.driver], paths["plugins"])
    deployment.b.prepare()
    deployment.env["FIXEDUSER_DOCKER_SOCKET"] = str(deployment.b.socket_path)
    with ThreadPoolExecutor(1) as pool:
        b_started = pool.submit(deployment.b.start, 90)
        wait_until(deployment.b.socket_path.exists, f"{deployment.b.socket_path} to appear", within=30)
        up = deployment.compose("up", "-d", "--no-build")
        assert up.returncode == 0, up.stderr
        b_started.result(timeout=120)
    deployment.b.import_busybox()


def _stop(deployment: Deployment) -> list[str]:
    """B first (its containers use the views), then `docker-compose down`, then A; then every mount."""
    try:
        deployment.b.stop()
    finally:
        try:
            if deployment.a.running:
                deployment.compose("down", "--timeout", "5")
        finally:
            deployment.a.stop()
    return unmount_all_under([deployment.base])


@pytest.fixture(scope="module")
def deployed(engine: Engine) -> Iterator[Deployment]:
    if engine.compose is None:
        pytest.skip(f"engine {engine} has no docker-compose")
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fxc-")
    tag = secrets.token_hex(3)
    authz, driver = f"fxc-{tag}-authz", f"fxc-{tag}"
    paths: dict[str, Path] = {}
    a = Dockerd(base / "a", engine=engine)
    users = TLSUsers(base / "tls", users=("alice", "bob", "carol"))
    b = Dockerd(base / "b", authz_plugin=authz, tls=users, engine=engine)
    deployment = Deployment(base, a, b, f"fxc{tag}", {}, driver, engine.compose)
    specs = [SPEC_DIR / f"{name}.spec" for name in (authz, driver)]
    try:
        paths = _host_layout(base)
        a.start()
        deployment.env.update(
            clean_env(
                {
                    "PATH": engine.search_path,  # build-image runs the engine's docker and docker-compose
                    "DOCKER_HOST": a.host,
                    "DOCKER_CONFIG": str(a.client_config),
                    "FIXEDUSER_BASE_IMAGE": "fixeduser-base:latest",
                    "FIXEDUSER_PLUGIN_DIR": str(paths["plugins"]),
                    "FIXEDUSER_POLICY_DIR": str(paths["policies"]),
                    "FIXEDUSER_STATE_DIR": str(paths["state"]),
                    "FIXEDUSER_STORAGE_DIR": str(paths["volumes"]),
                    "FIXEDUSER_AUTHZ_NAME": authz,
                    "FIXEDUSER_VOLUME_NAME": driver,
                }
            )
        )
        _start(deployment, paths, authz)
        yield deployment
    finally:
        leftovers = _stop(deployment)
        for spec in specs:
            spec.unlink(missing_ok=True)
        if not leftovers and not mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"mounts left behind: {leftovers}"


def _capabilities(pid: int) -> set[str]:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("CapEff:"))
    mask = int(line.split()[1], 16)
    return {CAP_BITS.get(bit, f"bit{bit}") for bit in range(64) if mask >> bit & 1}


def test_the_service_runs_with_exactly_the_compose_privileges(deployed: Deployment) -> None:
    """The running plugin process holds the seven capabilities and nothing else, no network, not privileged."""
    info = deployed.inspect()
    state, host = info["State"], info["HostConfig"]
    assert isinstance(state, dict) and isinstance(host, dict)
    assert state["Running"] is True, deployed.logs()
    assert _capabilities(int(state["Pid"])) == EXPECTED_CAPS
    assert host["Privileged"] is False and host["NetworkMode"] == "none"
    assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/fuse"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}  # type: ignore[attr-defined]
    assert mounts[str(deployed.state)]["Propagation"] == "rshared"
    assert mounts["/etc/fixeduser/policies"]["RW"] is False
    assert mounts["/var/run/docker.sock"]["Source"] == str(deployed.b.socket_path)


def test_the_compose_healthcheck_and_healthz_pass(deployed: Deployment) -> None:
    """The compose file's own healthcheck command succeeds in the container; /healthz answers 200 on the host."""
    test = deployed.inspect()["Config"]["Healthcheck"]["Test"]  # type: ignore[index]
    assert test[0] == "CMD"
    ran = deployed.a.docker("exec", deployed.container_id(), *test[1:])
    assert ran.returncode == 0, ran.stderr
    status, body = unix_http_request(deployed.state / "control.sock", "GET", "/healthz")
    assert status == 200, body
    assert json.loads(body)["ok"] is True


def _owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode)
    return st.st_uid, st.st_gid


def test_files_belong_to_each_users_fixed_identity(deployed: Deployment) -> None:
    """alice and bob write as container root; on the storage the files are 10001 and 10002, through
    the views the containerised plugin mounted and propagated to the host."""
    volume = "eng-compose"
    deployed.ok_on_b("volume", "create", "-d", deployed.driver, volume, user="alice")
    for user in ("alice", "bob"):
        deployed.ok_on_b(
            "run", "--rm", "--network", "none", "-v", f"{volume}:/data", "busybox:local",
            "sh", "-c", f"echo hi > /data/{user}.txt", user=user,
        )  # fmt: skip
    assert _owner(deployed.storage / volume / "alice.txt") == ALICE
    assert _owner(deployed.storage / volume / "bob.txt") == BOB


def test_the_view_is_mounted_in_the_container_and_seen_on_the_host(deployed: Deployment) -> None:
    """While alice's container runs, her bindfs view is a FUSE mount below the host's state folder
    (propagated out of the plugin container), and her container's id inside is root."""
    volume = "eng-view"
    deployed.ok_on_b("volume", "create", "-d", deployed.driver, volume, user="alice")
    name = f"view-{secrets.token_hex(3)}"
    deployed.ok_on_b(
        "run", "-d", "--name", name, "--network", "none", "-v", f"{volume}:/data", "busybox:local",
        "sh", "-c", "touch /data/live && sleep 60", user="alice",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (deployed.storage / volume / "live").exists():
            assert time.monotonic() < deadline, deployed.logs()
            time.sleep(0.1)
        views = [m for m in mounts_below(deployed.state / "mnt") if m.fstype.startswith("fuse")]
        assert views, f"no FUSE view below {deployed.state / 'mnt'} on the host"
        assert _owner(deployed.storage / volume / "live") == ALICE
    finally:
        deployed.on_b("rm", "-f", name, user="alice")


def test_carol_without_identity_gets_no_mount(deployed: Deployment) -> None:
    """carol has no p2 line: the containerised plugin refuses her mount with a message."""
    volume = "eng-carol"
    deployed.ok_on_b("volume", "create", "-d", deployed.driver, volume, user="alice")
    result = deployed.on_b(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/data", "busybox:local", "true", user="carol"
    )
    assert result.returncode != 0
    assert "carol has no fixed user or group" in result.stderr, result.stderr
