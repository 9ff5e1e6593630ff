"""`fixeduser whois`: roles, identity and grants, each with file:line."""

from __future__ import annotations

import json

import pytest

from fixeduser.cli import main
from tests.policy.conftest import REPO

POLICY = str(REPO / "policies")


def test_whois_alice(capsys: pytest.CaptureFixture[str]) -> None:
    """alice: role:eng from a g line, identity 10001:10000 from her p2 line, eng-* volumes."""
    assert main(["whois", "alice", "--policy-dir", POLICY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["role"] for r in report["roles"]] == ["role:eng"]
    assert report["identity"]["uid"] == 10001 and report["identity"]["gid"] == 10000
    assert report["identity_sources"][0]["text"] == "p2, alice, 10001, 10000"
    assert {(g["object"], g["action"]) for g in report["grants"]["volumes"]} == {
        ("volume:eng-*", "create"), ("volume:eng-*", "mount"),
    }  # fmt: skip
    assert all(":" in g["where"] for g in report["grants"]["api"])


def test_whois_carol_has_no_identity(capsys: pytest.CaptureFixture[str]) -> None:
    """carol's missing identity is shown with the line to add."""
    assert main(["whois", "carol", "--policy-dir", POLICY]) == 0
    out = capsys.readouterr().out
    assert "fixed identity: NONE" in out and "p2, carol" in out


def test_whois_unknown_user(capsys: pytest.CaptureFixture[str]) -> None:
    """A user the policy never names exits 1 and says every request is denied."""
    assert main(["whois", "mallory", "--policy-dir", POLICY]) == 1
    assert "every request is denied" in capsys.readouterr().out


def test_whois_nested_roles_show_the_chain(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """Roles of roles list the chain of g lines that grants them."""
    from pathlib import Path  # noqa: PLC0415

    directory = Path(str(tmp_path))
    (directory / "model.conf").write_text((REPO / "policies" / "model.conf").read_text())
    (directory / "policy.csv").write_text(
        "g, ann, role:ci\ng, role:ci, role:builder\np, role:builder, escalation, privileged\n"
        "p, role:ci, bind:/srv/ci/*, bind\n"
    )
    assert main(["whois", "ann", "--policy-dir", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    chain = {r["role"]: [v["where"].rsplit(":", 1)[-1] for v in r["via"]] for r in report["roles"]}
    assert chain == {"role:ci": ["1"], "role:builder": ["1", "2"]}
    assert {g["object"] for g in report["grants"]["escalations"]} == {"escalation", "bind:/srv/ci/*"}
