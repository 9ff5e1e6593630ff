"""fixeduser as a managed (v2) plugin: bundle built from this host, created, enabled, used as authz and driver.

No registry: `python -m fixeduser.admin.bundle` assembles the rootfs locally and `docker plugin create` loads it
into a private sandbox daemon, which is then restarted with `--authorization-plugin=NAME:latest`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixeduser.admin.bundle import build_plugin
from fixeduser.sandbox import Dockerd, Engine, TLSUsers, make_private_dir, unmount_all_under
from fixeduser.volumes.backends.local import prepare_host_for_fuse

REPO = Path(__file__).resolve().parents[2]
RUN = ("run", "--rm", "--network", "none", "-v", "eng-managed:/data", "busybox:local")


@dataclass
class Managed:
    dockerd: Dockerd
    name: str  # the plugin reference, NAME:latest
    plugin_id: str
    storage: Path

    def docker(self, *args: str, user: str | None = None) -> tuple[int, str]:
        result = self.dockerd.docker(*args, user=user, timeout=120)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def managed(engine: Engine) -> Iterator[Managed]:
    prepare_host_for_fuse()
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fu-managed-")
    bundle = build_plugin(base / "bundle", config=REPO / "deploy" / "plugin" / "config.json")
    shutil.copytree(REPO / "policies", base / "policies")
    for folder in ("state", "storage"):
        (base / folder).mkdir(mode=0o711)
    dockerd = Dockerd(base / "dockerd", tls=TLSUsers(base / "tls", users=("alice", "bob", "carol")), engine=engine)
    name = f"fxu-{secrets.token_hex(3)}"
    plugin_id = ""
    try:
        dockerd.start()
        dockerd.import_busybox()
        dockerd.docker("plugin", "create", name, str(bundle), check=True, timeout=300)
        plugin_id = dockerd.docker("plugin", "inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()
        dockerd.docker(
            "plugin", "set", name,
            f"policies.source={base / 'policies'}",
            f"state.source={base / 'state'}",
            f"storage.source={base / 'storage'}",
            f"docker.source={dockerd.socket_path}",
            f"args=--volume-name={name}:latest",
            check=True,
        )  # fmt: skip
        dockerd.docker("plugin", "enable", name, check=True, timeout=120)
        # as an admin does it: the plugin is installed and enabled first, then the daemon uses it for authz
        dockerd.stop()
        dockerd.authz_plugin = f"{name}:latest"
        dockerd.start()
        yield Managed(dockerd, f"{name}:latest", plugin_id, base / "storage")
    finally:
        dockerd.docker("plugin", "disable", "-f", name)
        dockerd.docker("plugin", "rm", "-f", name)
        dockerd.stop()
        if plugin_id:  # dockerd 20.10 keeps managed plugin sockets in /run/docker/plugins/<id> whatever its exec-root
            shutil.rmtree(Path("/run/docker/plugins") / plugin_id, ignore_errors=True)
        assert unmount_all_under([base]) == []
        shutil.rmtree(base, ignore_errors=True)


def test_enabled_with_both_interfaces_and_a_propagated_mount(managed: Managed) -> None:
    """The plugin is enabled, implements authz and volumedriver on one socket, and the daemon restarted with it."""
    code, out = managed.docker("plugin", "inspect", managed.name)
    assert code == 0, out
    plugin = json.loads(out)[0]
    assert plugin["Enabled"] is True
    types = {
        t if isinstance(t, str) else f"{t['Prefix']}.{t['Capability']}/{t['Version']}"
        for t in plugin["Config"]["Interface"]["Types"]
    }
    assert types == {"docker.authz/1.0", "docker.volumedriver/1.0"}
    assert plugin["Config"]["PropagatedMount"] == "/mnt/fixeduser"
    assert managed.dockerd.authz_plugin == managed.name and managed.dockerd.running


def test_fixed_user_files_through_the_managed_plugin(managed: Managed) -> None:
    """The README's example works unchanged: alice's and bob's files get their fixed uids; carol is refused."""
    code, out = managed.docker("volume", "create", "-d", managed.name, "eng-managed", user="alice")
    assert code == 0, out
    code, out = managed.docker(*RUN, "sh", "-c", "echo hi > /data/alice.txt && chmod 600 /data/alice.txt", user="alice")
    assert code == 0, out
    code, out = managed.docker(*RUN, "sh", "-c", "touch /data/bob.txt; cat /data/alice.txt", user="bob")
    assert "Permission denied" in out
    code, out = managed.docker(*RUN, "ls", "/data", user="carol")
    assert code != 0 and "carol cannot mount fixeduser volume eng-managed" in out
    owners = sorted(
        f"{p.name} {p.stat().st_uid}:{p.stat().st_gid}" for p in (managed.storage / "eng-managed").iterdir()
    )
    assert owners == ["alice.txt 10001:10000", "bob.txt 10002:10000"]
    code, out = managed.docker("volume", "inspect", "-f", "{{.Driver}}", "eng-managed", user="alice")
    assert out.strip() == managed.name


def test_disable_is_admin_only_and_fails_open_for_root(managed: Managed) -> None:
    """Users cannot disable the plugin; when root does, the daemon stops asking it (fail-open), as documented."""
    escalation = ("run", "--rm", "--network", "none", "-v", "/etc:/x", "busybox:local", "true")
    code, out = managed.docker(*escalation, user="carol")
    assert code != 0 and "authorization denied" in out
    code, out = managed.docker("plugin", "disable", "-f", managed.name, user="alice")
    assert code != 0 and "authorization denied" in out
    code, out = managed.docker("plugin", "disable", managed.name)  # root over the unix socket: an admin
    in_use = code != 0 and "in use" in out
    if in_use:  # a volume of its driver holds a reference: only a forced disable goes through
        code, out = managed.docker("plugin", "disable", "-f", managed.name)
    assert code == 0, out
    code, out = managed.docker(*escalation, user="carol")
    assert code == 0, f"expected fail-open after disable, got: {out}"
    print(f"plain disable refused while a volume exists: {in_use}; after disable carol's /etc bind ran")
