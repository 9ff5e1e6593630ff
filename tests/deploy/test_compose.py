"""docker-compose.yml: accepted by docker-compose, with exactly the privileges docs/deploy.md explains."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fixeduser.app.settings import load_settings
from fixeduser.sandbox import clean_env

REPO = Path(__file__).resolve().parents[2]


def _without_overrides() -> dict[str, str]:
    """The environment without FIXEDUSER_* variables: the compose file's defaults apply."""
    return {k: v for k, v in clean_env().items() if not k.startswith("FIXEDUSER_")}


@pytest.fixture(scope="module")
def config() -> dict[str, object]:
    """The compose file as docker-compose resolves it (`docker-compose config`), read as data."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True, text=True, check=False, timeout=60, env=_without_overrides(), cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # docker-compose's own Python has PyYAML (python3-yaml); the project's venv needs none
    to_json = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    converted = subprocess.run(
        ["/usr/bin/python3", "-c", to_json], input=result.stdout, capture_output=True, text=True, check=True
    )
    loaded: dict[str, object] = json.loads(converted.stdout)
    return loaded


def service(config: dict[str, object]) -> dict[str, object]:
    services = config["services"]
    assert isinstance(services, dict)
    found: dict[str, object] = services["fixeduser"]
    return found


def test_compose_config_accepts_the_file(config: dict[str, object]) -> None:
    """docker-compose parses the file; the image is built from deploy/Dockerfile on a locally imported
    base image (no registry) and runs without a network."""
    svc = service(config)
    assert svc["build"] == {
        "context": str(REPO / "deploy"),
        "dockerfile": "Dockerfile",
        "args": {"BASE_IMAGE": "fixeduser-base:latest"},
    }
    assert svc["network_mode"] == "none" and svc["restart"] == "always"
    assert (REPO / "deploy" / "Dockerfile").is_file()


def test_privileges_are_exactly_the_documented_ones(config: dict[str, object]) -> None:
    """All capabilities dropped but seven; /dev/fuse; no no-new-privileges; policies read-only; rshared state."""
    svc = service(config)
    assert svc["cap_drop"] == ["ALL"]
    assert sorted(svc["cap_add"]) == sorted(
        ["SYS_ADMIN", "SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL"]
    )
    assert svc["devices"] == ["/dev/fuse:/dev/fuse"]
    assert "privileged" not in svc
    assert not any("no-new-privileges" in opt for opt in svc.get("security_opt", []))
    volumes = svc["volumes"]
    assert "/etc/fixeduser/policies:/etc/fixeduser/policies:ro" in volumes
    state = [v for v in volumes if isinstance(v, dict) and v["target"] == "/var/lib/fixeduser"]
    assert state and state[0]["bind"]["propagation"] == "rshared"
    assert "/run/docker/plugins:/run/docker/plugins:rw" in volumes
    text = (REPO / "docs" / "deploy.md").read_text()
    for word in ("SYS_ADMIN", "SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "/dev/fuse", "rshared"):
        assert word in text, f"docs/deploy.md does not explain {word}"


def test_command_is_valid_serve_settings(config: dict[str, object]) -> None:
    """The service's `serve` options are ones fixeduser serve accepts."""
    command = service(config)["command"]
    assert isinstance(command, list) and command[0] == "serve"
    overrides = dict(arg[2:].replace("-", "_").split("=", 1) for arg in command[1:])
    settings = load_settings(None, overrides)
    assert str(settings.state_dir) == "/var/lib/fixeduser"
    assert json.dumps(str(settings.policy_dir)) == '"/etc/fixeduser/policies"'


def test_host_paths_default_to_the_real_ones(config: dict[str, object]) -> None:
    """Without FIXEDUSER_* variables every host path and plugin name is the production one, and the
    state folder is mounted at its own path (the driver hands dockerd paths below it)."""
    svc = service(config)
    volumes = svc["volumes"]
    assert isinstance(volumes, list)
    for bind in (
        "/run/docker/plugins:/run/docker/plugins:rw",
        "/var/run/docker.sock:/var/run/docker.sock:rw",
        "/srv/fixeduser/volumes:/srv/fixeduser/volumes:rw",
    ):
        assert bind in volumes
    state = next(v for v in volumes if isinstance(v, dict) and v["target"] == "/var/lib/fixeduser")
    assert state["source"] == state["target"]
    command = svc["command"]
    assert isinstance(command, list)
    assert {"--authz-name=fixeduser-authz", "--volume-name=fixeduser", "--state-dir=/var/lib/fixeduser"} <= set(command)
