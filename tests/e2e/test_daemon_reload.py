"""A daemon reload (SIGHUP, `systemctl reload docker`) drops an authz plugin named only by the
`--authorization-plugin` flag: the daemon then allows every request without asking. fixeduser cannot
stop the daemon from doing so; it notices (its own request no longer reaches it), says so in /healthz,
`fixeduser status`, its log and its metrics, and its volumes still refuse to mount. A plugin named in
daemon.json, as `fixeduser install` names it, survives the reload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fixeduser.sandbox import Engine, unix_http_request

from .conftest import E2E, own_stack

PRIVILEGED = ("run", "--rm", "--network", "none", "--privileged", "busybox:local", "true")


@pytest.fixture
def flag_stack(engine: Engine) -> Iterator[E2E]:
    yield from own_stack(engine, name="reload", prefix="furl", authz_in_config=False)


@pytest.fixture
def config_stack(engine: Engine) -> Iterator[E2E]:
    yield from own_stack(engine, name="reload", prefix="furl", authz_in_config=True)


def control(stack: E2E, path: str) -> tuple[int, Any]:
    status, body = unix_http_request(stack.plugin.state_dir / "control.sock", "GET", path, timeout=10)
    return status, body.decode() if path == "/metrics" else json.loads(body)


def asked(stack: E2E) -> dict[str, Any]:
    answer: dict[str, Any] = control(stack, "/status")[1]["daemon_asks_fixeduser"]
    return answer


def wait_checked(stack: E2E, after: int = 0) -> None:
    stack.wait(lambda: asked(stack)["checks"] > after, f"a check after {after} that the daemon asks fixeduser")


def test_a_reload_that_drops_a_flag_named_plugin_is_noticed_and_volumes_stay_shut(flag_stack: E2E) -> None:
    stack = flag_stack
    stack.ok("volume", "create", "-d", stack.driver, "eng-reload", user="alice")
    wait_checked(stack)
    assert asked(stack)["consulted"] is True
    assert control(stack, "/healthz") == (200, {"problems": [], "notes": [], "ok": True})
    assert "fixeduser_daemon_asks_authz 1.0" in control(stack, "/metrics")[1]
    assert "may not create a container with --privileged" in stack.denied(*PRIVILEGED, user="alice")

    stack.stack.dockerd.reload(debug=True)
    stack.wait(lambda: control(stack, "/healthz")[0] == 503, "/healthz to report the daemon no longer asks")

    problems = control(stack, "/healthz")[1]["problems"]
    assert len(problems) == 1 and "no longer asks fixeduser about its requests" in problems[0]
    assert "--authorization-plugin flag" in problems[0] and "daemon.json" in problems[0]
    assert asked(stack)["consulted"] is False
    assert "fixeduser_daemon_asks_authz 0.0" in control(stack, "/metrics")[1]
    assert "authorization is off" in stack.plugin.log_tail()
    # What the check found is the daemon's own behaviour: alice's privileged container is no longer refused.
    assert "authorization denied" not in stack.docker(*PRIVILEGED, user="alice").stderr
    # The volume driver never saw an authorized start, so the volume stays shut.
    refused = stack.denied("run", "--rm", "--network", "none", "-v", "eng-reload:/data", "busybox:local", "true",
                           user="alice")  # fmt: skip
    assert "no authorized start of a container using volume eng-reload" in refused


def test_a_reload_keeps_a_plugin_named_in_daemon_json_and_the_check_says_so(config_stack: E2E) -> None:
    stack = config_stack
    wait_checked(stack)
    checks = asked(stack)["checks"]

    stack.stack.dockerd.reload(debug=True)
    wait_checked(stack, after=checks)  # the daemon's reload event brings a check at once, not at the next minute

    assert asked(stack)["consulted"] is True
    assert control(stack, "/healthz")[0] == 200
    assert "may not create a container with --privileged" in stack.denied(*PRIVILEGED, user="alice")
