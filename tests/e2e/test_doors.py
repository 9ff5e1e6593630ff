"""No side doors, on the system's 20.10 engine behind fixeduser: old API versions, start bodies and bodies
the daemon does not show the plugin. Each denial is checked for its effect too (inspected as @local)."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from fixeduser.sandbox import docker_cli

from .conftest import E2E

IMAGE = "busybox:local"
BIG = 1024 * 1024 + 10  # the daemon shows plugins JSON bodies under 1 MiB only


def request(
    stack: E2E,
    user: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str = "application/json",
    chunked: bool = False,
) -> tuple[int, str]:
    """A raw HTTPS request as `user`; `chunked` sends the body with Transfer-Encoding: chunked."""
    bundle = stack.stack.dockerd.tls.bundle(user)  # type: ignore[union-attr]
    context = ssl.create_default_context(cafile=str(bundle / "ca.pem"))
    context.load_cert_chain(bundle / "cert.pem", bundle / "key.pem")
    assert stack.stack.dockerd.port is not None
    connection = http.client.HTTPSConnection("127.0.0.1", stack.stack.dockerd.port, context=context, timeout=60)
    headers = {"Content-Type": content_type} if body is not None else {}
    try:
        if chunked:
            assert body is not None
            headers["Transfer-Encoding"] = "chunked"
            connection.request(method, path, body=iter([body]), headers=headers, encode_chunked=True)
        else:
            connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.fixture
def alices(stack: E2E) -> Iterator[str]:
    """A created (never started) container of alice's that runs `true`; its full ID."""
    cid = stack.ok("create", "--network", "none", IMAGE, "true", user="alice").strip()
    try:
        yield cid
    finally:
        stack.ok("rm", "-f", cid)


def host_config(stack: E2E, cid: str) -> dict[str, object]:
    """The container's HostConfig as the daemon holds it, inspected as @local."""
    return json.loads(stack.ok("inspect", "-f", "{{json .HostConfig}}", cid))  # type: ignore[no-any-return]


def state(stack: E2E, cid: str) -> str:
    return stack.ok("inspect", "-f", "{{.State.Status}}", cid).strip()


def test_old_api_start_with_a_host_config_is_denied_and_changes_nothing(stack: E2E, alices: str) -> None:
    """20.10 applies a HostConfig sent with `POST /v1.23/containers/{id}/start` (a bind of / would follow):
    alice is denied, by version, and the container's HostConfig is what it was."""
    before = host_config(stack, alices)
    assert before["Binds"] is None and before["Privileged"] is False
    path = f"/v1.23/containers/{alices}/start"
    bodies = [
        json.dumps({"Binds": ["/:/host"], "Privileged": True}).encode(),
        json.dumps({"HostConfig": {"Binds": ["/:/host"]}}).encode(),
        json.dumps({"Binds": ["/:/host"], "Pad": "x" * BIG}).encode(),  # over 1 MiB: the plugin sees no body
    ]
    for body in bodies:
        for chunked in (False, True):
            status, text = request(stack, "alice", "POST", path, body, chunked=chunked)
            assert status == 403, (chunked, status, text)
            assert "API version 1.23 is older than 1.24" in text, text
    assert host_config(stack, alices) == before
    assert state(stack, alices) == "created"


def test_start_bodies_at_a_current_version(stack: E2E, alices: str) -> None:
    """A HostConfig body is refused by fixeduser at any version; `{}` starts the container."""
    path = f"/v1.41/containers/{alices}/start"
    status, text = request(stack, "alice", "POST", path, json.dumps({"HostConfig": {"Binds": ["/:/h"]}}).encode())
    refused_by_daemon = status == 400 and "non-empty request body" in text  # 26.1 and newer refuse it themselves
    assert refused_by_daemon or (
        status == 403 and "alice may not container.start: fixeduser cannot read the container start body" in text
    ), text
    status, text = request(stack, "alice", "POST", path, b"{" + b" " * BIG + b"}", chunked=True)
    if stack.engine.release < (26, 1):  # 20.10 does not show the plugin a body it cannot size
        assert status == 403 and "no Content-Length" in text, text
    else:  # newer engines show it: empty JSON, which the plugin allows and the daemon refuses as a body
        assert status == 400 and "non-empty request body" in text, text
    assert state(stack, alices) == "created" and host_config(stack, alices)["Binds"] is None
    status, text = request(stack, "alice", "POST", path, b"{}")
    assert status == 204, text
    assert stack.ok("wait", alices, user="alice").strip() == "0"


@pytest.mark.parametrize("version", ["1.23", "1.12", "1.023", "01.20", "1."])
def test_old_api_versions_are_denied_naming_the_version(stack: E2E, version: str) -> None:
    """Versions the daemon reads as older than 1.24 are denied with the version as written; 1.024 is 1.24."""
    status, text = request(stack, "alice", "GET", f"/v{version}/containers/json")
    assert status == 403 and f"API version {version} is older than 1.24" in text, text
    status, text = request(stack, "alice", "HEAD", f"/v{version}/_ping")
    assert status == 403, text
    status, _ = request(stack, "alice", "GET", "/v1.024/containers/json")
    assert status == 200


def test_cli_pinned_to_an_old_version_is_denied(stack: E2E) -> None:
    """`DOCKER_API_VERSION=1.23 docker ps`: the CLI's unversioned ping passes, its request is denied by version."""
    daemon = stack.stack.dockerd
    result = subprocess.run(
        [docker_cli(), *daemon.cli_args("alice"), "ps"],
        env={**daemon.cli_env(), "DOCKER_API_VERSION": "1.23"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "API version 1.23 is older than 1.24" in result.stderr, result.stderr
    assert "CONTAINER ID" in stack.ok("ps", user="alice")  # the negotiated version works


def test_update_with_a_body_the_plugin_is_not_shown_is_denied(stack: E2E, alices: str) -> None:
    """An update body 20.10 does not show the plugin (over 1 MiB, with a Content-Length or chunked) is denied: the
    plugin denies what it cannot check, and the policy is unchanged. Newer engines show such bodies, and the update
    is decided on what it holds (a restart policy needs no grant)."""
    body = json.dumps({"RestartPolicy": {"Name": "always"}, "Pad": "x" * BIG}).encode()
    path = f"/v1.41/containers/{alices}/update"
    hidden = stack.engine.release < (26, 1)
    for chunked, reason in ((False, f"{len(body)}-byte body"), (True, "no Content-Length")):
        status, text = request(stack, "alice", "POST", path, body, chunked=chunked)
        if hidden:
            assert status == 403 and reason in text, (chunked, text)
        else:
            assert status == 200, (chunked, text)
    if not hidden:
        stack.ok("update", "--restart", "no", alices, user="alice")
    text_plain = json.dumps({"RestartPolicy": {"Name": "always"}}).encode()
    status, text = request(stack, "alice", "POST", path, text_plain, content_type="text/plain")
    assert status == 403 and "byte body, and the daemon forwards only application/json" in text, text
    assert host_config(stack, alices)["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    stack.ok("update", "--restart", "on-failure:2", alices, user="alice")  # a shown body passes
    assert host_config(stack, alices)["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
