"""`fixeduser explain`: docker command lines through a real Authorizer, no daemon."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixeduser.admin.dockercli import CliError, translate
from fixeduser.cli import main
from tests.policy.conftest import REPO

POLICY = str(REPO / "policies")


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["explain", "--policy-dir", POLICY, "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_run_translates_to_create_attach_wait_start() -> None:
    """`docker run` is a create with the options in HostConfig, then attach, wait and start."""
    translation = translate(["docker", "run", "-it", "--rm", "--privileged", "-v", "eng-x:/data", "--cap-add=SYS_ADMIN",
                             "--mount", "type=volume,src=eng-y,dst=/y,volume-driver=fixeduser,volume-opt=uid=1",
                             "busybox", "sh", "-c", "true"])  # fmt: skip
    create = translation.calls[0]
    assert create.method == "POST" and create.uri == "/v1.41/containers/create" and create.body is not None
    host = create.body["HostConfig"]
    assert host["Privileged"] and host["CapAdd"] == ["SYS_ADMIN"] and host["Binds"] == ["eng-x:/data"]
    assert host["Mounts"][0]["VolumeOptions"]["DriverConfig"] == {"Name": "fixeduser", "Options": {"uid": "1"}}
    assert create.body["Cmd"] == ["sh", "-c", "true"]
    assert [c.uri.rsplit("/", 1)[-1].split("?")[0] for c in translation.calls[1:]] == ["attach", "wait", "start"]
    assert translation.volumes == {"eng-x", "eng-y"}


def test_unknown_option_is_an_error_not_ignored() -> None:
    """An option explain does not know would change the request: refuse rather than explain another one."""
    with pytest.raises(CliError, match="--oom-score-adj"):
        translate(["run", "--oom-score-adj", "5", "busybox"])


def test_allowed_run_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """alice may run with her team's volume; each request names the line that allows it."""
    code, report = explain(capsys, "--user", "alice", "--", "docker", "run", "-v", "eng-data:/d", "busybox", "true")
    assert code == 0 and report["allowed"]
    requests = report["requests"]
    assert isinstance(requests, list) and requests[0]["action"] == "container.create"
    assert "policy.csv" in requests[0]["rule"] and "p, role:eng, api, container.*" in requests[0]["rule"]


@pytest.mark.parametrize(
    ("user", "argv", "expected"),
    [
        ("alice", ["run", "--privileged", "busybox", "true"], "escalation, privileged"),
        ("alice", ["run", "-v", "/opt/data:/d", "busybox", "true"], "bind:/opt/data, bind"),
        ("carol", ["run", "-v", "eng-x:/d", "busybox", "true"], "carol has no fixed user or group"),
        ("alice", ["run", "-v", "ops-x:/d", "busybox", "true"], "alice may not mount fixeduser volume ops-x"),
        ("dave", ["ps"], "dave may not container.list"),
        ("alice", ["volume", "create", "-d", "fixeduser", "ops-x"], "volume:ops-x, create"),
        ("alice", ["volume", "rm", "eng-x"], "alice may not remove fixeduser volume eng-x"),
    ],
)
def test_denials_say_who_what_and_which_line(
    capsys: pytest.CaptureFixture[str], user: str, argv: list[str], expected: str
) -> None:
    """Refusals are one sentence naming the user, what was refused, and the missing policy line."""
    code, report = explain(capsys, "--user", user, "--", "docker", *argv)
    assert code == 1 and not report["allowed"]
    requests = report["requests"]
    assert isinstance(requests, list)
    assert expected in requests[-1]["message"], requests[-1]["message"]


def test_start_of_someone_elses_container(capsys: pytest.CaptureFixture[str]) -> None:
    """Starting bob's container needs `others`; the admin (@local) has it."""
    code, report = explain(capsys, "--user", "alice", "--container-owner", "bob", "--", "docker", "start", "c1")
    assert code == 1 and "bob's container" in report["requests"][-1]["message"]  # type: ignore[index]
    code, _ = explain(capsys, "--user", "@local", "--container-owner", "bob", "--", "docker", "start", "c1")
    assert code == 0


def test_raw_form(capsys: pytest.CaptureFixture[str]) -> None:
    """--method/--uri/--body decide one raw request."""
    body = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}})
    code, report = explain(capsys, "--user", "@local", "--method", "POST", "--uri", "/v1.41/containers/create",
                           "--body", body)  # fmt: skip
    assert code == 0 and "p, role:admin, *, *" in report["requests"][0]["rule"]  # type: ignore[index]


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    """The table for people ends with one sentence saying allowed or why not."""
    code = main(
        ["explain", "--policy-dir", POLICY, "--user", "bob", "--", "docker", "exec", "--privileged", "c1", "sh"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "DENIED at POST /v1.41/containers/c1/exec" in out and "escalation, exec-privileged" in out


def test_explain_protects_the_folders_serve_protects(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With the deployment's serve settings, a bind the server would refuse (its plugin folder, its policy folder)
    is refused by explain too, even where a bind grant covers the path."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as policy:
        policy.write(f"p, alice, bind:{tmp_path}/*, bind\n")
    config = tmp_path / "serve.toml"
    config.write_text(f'plugin_dir = "{tmp_path}/plugins"\nstate_dir = "{tmp_path}/state"\n')
    for folder in ("plugins", "policies", "data"):
        (tmp_path / folder).mkdir(exist_ok=True)
    run = ["--", "docker", "run", "-v", f"{tmp_path}/plugins:/p", "busybox", "true"]
    code = main(["explain", "--policy-dir", str(policies), "--json", "--user", "alice", *run])
    assert code == 0, capsys.readouterr().out  # without the deployment's settings nothing says it is protected
    capsys.readouterr()
    for folder in ("plugins", "policies"):
        run = ["--", "docker", "run", "-v", f"{tmp_path}/{folder}:/p", "busybox", "true"]
        code = main(["explain", "--policy-dir", str(policies), "--config", str(config), "--json", "--user", "alice",
                     *run])  # fmt: skip
        report = json.loads(capsys.readouterr().out)
        assert code == 1 and "protected-bind" in report["requests"][0]["message"], report  # type: ignore[index]
    code = main(["explain", "--policy-dir", str(policies), "--config", str(config), "--json", "--user", "alice",
                 "--", "docker", "run", "-v", f"{tmp_path}/data:/p", "busybox", "true"])  # fmt: skip
    assert code == 0, capsys.readouterr().out
