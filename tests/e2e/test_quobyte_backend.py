"""`--backend quobyte` through a real dockerd, against the Quobyte API test double.

The Quobyte client cannot run here: a plain directory stands in for its mount
(`--quobyte-client directory`) and the test double makes each volume's folder and its
`<user>#<group>@<volume>` paths there (symlinks, no user mapping). Everything else is real:
the plugin process, its API calls over HTTP, the daemon's Create/Mount/Unmount/Get/Remove.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixeduser.sandbox import Engine, make_private_dir, start_stack

from ..quobyte_api import QuobyteApiDouble
from .conftest import E2E, E2E_USERS, REPO


@dataclass
class QuobyteStack:
    e2e: E2E
    api: QuobyteApiDouble
    client_dir: Path


@pytest.fixture(scope="module")
def quobyte(engine: Engine) -> Iterator[QuobyteStack]:
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fu-quobyte-")
    shutil.copytree(REPO / "policies", base / "policies")
    client_dir = base / "quobyte-client"
    client_dir.mkdir()
    api = QuobyteApiDouble(client_dir=client_dir, mapped=[("10001", "10000"), ("10002", "10000")]).start()
    password = base / "quobyte-password"
    password.write_text("secret\n")
    password.chmod(0o600)
    try:
        running = E2E(
            start_stack(
                base,
                policy_dir=base / "policies",
                users=E2E_USERS,
                prefix="fuq",
                extra_args=(
                    "--backend", "quobyte", "--quobyte-api-url", api.url, "--quobyte-user", "admin",
                    "--quobyte-password-file", str(password), "--quobyte-mountpoint", str(client_dir),
                    "--quobyte-client", "directory", "--quobyte-tenant", "t1", "--quobyte-retries", "1",
                ),
                engine=engine,
            )
        )  # fmt: skip
        try:
            yield QuobyteStack(running, api, client_dir)
        finally:
            if not running.stack.stop():
                shutil.rmtree(base, ignore_errors=True)
    finally:
        api.stop()


def inspect(stack: E2E, volume: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(stack.ok("volume", "inspect", volume))[0]
    return info


def test_create_mount_and_user_mapped_path(quobyte: QuobyteStack) -> None:
    """Create goes through createVolume with -o tenant/configuration; containers get `<user>#<group>@<volume>`."""
    stack = quobyte.e2e
    stack.ok("volume", "create", "-d", stack.driver, "-o", "tenant=t2", "-o", "configuration=fast", "eng-q1",
             user="alice")  # fmt: skip
    created = quobyte.api.volume("t2", "eng-q1")
    assert created["configuration_name"] == "fast" and created["root_user_id"] == "10001"
    assert created["tenant_domain"] == quobyte.api.tenants["t2"]  # the tenant name was resolved to its UUID
    info = inspect(stack, "eng-q1")
    assert info["Scope"] == "global" and info["Status"]["backend"] == "quobyte"
    cid = stack.ok("run", "-d", "--network", "none", "-v", "eng-q1:/data", "busybox:local", "sh", "-c",
                   "echo hi > /data/hello; exec sleep 60", user="alice").strip()  # fmt: skip
    assert inspect(stack, "eng-q1")["Mountpoint"] == str(quobyte.client_dir / "10001#10000@eng-q1")
    deadline = time.monotonic() + 10
    while not (quobyte.client_dir / "eng-q1" / "hello").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert inspect(stack, "eng-q1")["Status"]["mounts"] == {"10001:10000": 1}
    assert "in use" in stack.denied("volume", "rm", "eng-q1")
    stack.ok("rm", "-f", cid, user="alice")
    assert inspect(stack, "eng-q1")["Status"]["mounts"] == {}


def test_volumes_survive_a_daemon_restart_while_the_api_is_down(quobyte: QuobyteStack) -> None:
    """With every API call failing (503), a restarted daemon still lists the volumes with their options."""
    stack = quobyte.e2e
    stack.ok("volume", "create", "-d", stack.driver, "-o", "configuration=slow", "eng-q2", user="alice")
    quobyte.api.fail_next = [503] * 100_000
    try:
        stack.stack.dockerd.stop()
        stack.stack.dockerd.start()
        names = stack.ok("volume", "ls", "--format", "{{.Name}}").split()
        assert "eng-q2" in names
        assert inspect(stack, "eng-q2")["Options"] == {"configuration": "slow"}
        message = stack.denied("volume", "create", "-d", stack.driver, "eng-q3", user="alice")
        assert "unavailable for resolveTenantName after 2 attempts: HTTP 503" in message  # the first call of a create
    finally:
        quobyte.api.fail_next = []
    stack.ok("volume", "create", "-d", stack.driver, "eng-q3", user="alice")
    assert quobyte.api.has("t1", "eng-q3")


def test_remove_keeps_the_quobyte_volume_unless_purge(quobyte: QuobyteStack) -> None:
    """`docker volume rm` forgets the volume but keeps it in Quobyte; with -o purge=true it is deleted there."""
    stack = quobyte.e2e
    stack.ok("volume", "create", "-d", stack.driver, "eng-q4", user="alice")
    stack.ok("volume", "create", "-d", stack.driver, "-o", "purge=true", "eng-q5", user="alice")
    stack.ok("volume", "rm", "eng-q4", "eng-q5")
    assert quobyte.api.has("t1", "eng-q4")
    assert not quobyte.api.has("t1", "eng-q5")
    assert "eraseVolume" in quobyte.api.methods() and "deleteVolume" not in quobyte.api.methods()
    assert not any(name in stack.ok("volume", "ls", "--format", "{{.Name}}") for name in ("eng-q4", "eng-q5"))
