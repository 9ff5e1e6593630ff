"""Live policy changes against real plugin processes: file edits, broken edits, a shared database."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixeduser.commands.status import fetch_status
from fixeduser.sandbox import Engine, PluginProcess
from tests.policy.postgres import Postgres

from .conftest import E2E, REPO, new_stack


def _within(seconds: float, predicate: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not true within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def own_stack(workdir: Path, engine: Engine) -> Iterator[E2E]:
    """A stack whose policy files this test may edit (the session stack's are shared)."""
    running = new_stack(workdir, engine)
    try:
        yield running
    finally:
        running.stack.stop()


def test_file_edit_changes_decisions_within_a_second(own_stack: E2E) -> None:
    """Adding dave to role:eng lets his `docker ps` through within 1 s; a broken edit keeps that and logs file:line."""
    policy = own_stack.plugin.policy_dir / "policy.csv"
    assert "dave may not container.list" in own_stack.denied("ps", user="dave")
    with policy.open("a") as handle:
        handle.write("g, dave, role:eng\n")
    took = _within(1.0, lambda: own_stack.docker("ps", user="dave").returncode == 0)
    print(f"file edit took effect after {took:.2f} s")
    good = policy.read_text()
    policy.write_text(good + "p, role:eng, volum:eng-*, mount\n")  # a typo in the object kind
    line = good.count("\n") + 1
    expected = f"{policy}:{line}: unknown object kind 'volum'"
    try:
        _within(2.0, lambda: expected in own_stack.plugin.log_tail(200))
    except AssertionError:
        raise AssertionError(f"{expected} not in log:\n{own_stack.plugin.log_tail(20)}") from None
    errors = [e for e in map(json.loads, own_stack.plugin.log_tail(400).splitlines()) if e["level"] == "error"]
    assert len(errors) == 1 and len(errors[0]["problems"]) == 1, errors
    own_stack.ok("ps", user="dave")  # the last good policy is still in force
    policy.write_text("")  # an emptied file is an error too, never deny-all
    _within(2.0, lambda: "file is empty" in own_stack.plugin.log_tail(200))
    own_stack.ok("ps", user="dave")


def _plugin(base: Path, url: str, name: str) -> PluginProcess:
    policy_dir = base / "policies"
    if not policy_dir.exists():
        shutil.copytree(REPO / "policies", policy_dir)
    return PluginProcess(
        base=base / name,
        authz_name=f"fu-{name}-{secrets.token_hex(3)}-authz",
        volume_name=f"fu-{name}-{secrets.token_hex(3)}",
        docker_socket=base / "no-docker.sock",  # never contacted: the test asks only the control socket
        policy_dir=policy_dir,
        extra_args=("--policy-database", url),
    )


def test_two_hosts_converge_on_a_database_edit(workdir: Path, postgres: Postgres) -> None:
    """Two `fixeduser serve` with one database: an import reaches both within seconds; a bad one reaches neither."""
    from fixeduser.cli import main  # noqa: PLC0415

    assert main(["policy", "import", str(REPO / "policies"), "--database", postgres.url]) == 0
    plugins = [_plugin(workdir, postgres.url, name) for name in ("host1", "host2")]
    try:
        for plugin in plugins:
            plugin.base.mkdir()
            plugin.start()
        versions = {fetch_status(p.state_dir / "control.sock")["policy"]["version"] for p in plugins}
        assert len(versions) == 1
        edited = workdir / "edited"
        shutil.copytree(REPO / "policies", edited)
        with (edited / "policy.csv").open("a") as handle:
            handle.write("g, dave, role:eng\n")
        assert main(["policy", "import", str(edited), "--database", postgres.url]) == 0
        start = time.monotonic()
        for plugin in plugins:
            socket = plugin.state_dir / "control.sock"
            _within(5.0, lambda s=socket: fetch_status(s)["policy"]["version"] not in versions)
        print(f"both hosts converged after {time.monotonic() - start:.2f} s")
        new_versions = {fetch_status(p.state_dir / "control.sock")["policy"]["version"] for p in plugins}
        assert len(new_versions) == 1
        # A bad row written behind fixeduser's back: both keep the last good policy and say why.
        import sqlalchemy  # noqa: PLC0415

        from fixeduser.policy.database import PolicyDatabase  # noqa: PLC0415

        database = PolicyDatabase(postgres.url)
        with database.engine.begin() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO casbin_rule (ptype, v0, v1) VALUES ('g', 'erin', 'eng')"))
        database.close()
        for plugin in plugins:
            socket = plugin.state_dir / "control.sock"
            _within(5.0, lambda s=socket: fetch_status(s)["policy"]["failed_reloads"] >= 1)
            status = fetch_status(socket)["policy"]
            assert status["version"] in new_versions and "casbin_rule@" in status["last_error"]
    finally:
        for plugin in plugins:
            plugin.stop()
            plugin.remove_specs()
