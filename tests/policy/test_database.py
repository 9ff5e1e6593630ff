"""The shared policy in a real PostgreSQL: import/export, validation, LISTEN/NOTIFY reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy

from fixeduser.cli import main
from fixeduser.policy.database import CHANNEL, DatabaseLoader, PolicyDatabase
from fixeduser.policy.store import PolicyStore
from fixeduser.postgres import listen

from .conftest import REPO
from .postgres import Postgres

EXAMPLE = REPO / "policies"


def _sql(postgres: Postgres, statement: str) -> None:
    database = PolicyDatabase(postgres.url)
    try:
        with database.engine.begin() as conn:
            conn.execute(sqlalchemy.text(statement))
    finally:
        database.close()


def test_import_export_round_trip(postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory imported and exported again has the same policy version; rows are located by id."""
    assert main(["policy", "import", str(EXAMPLE), "--database", postgres.url]) == 0
    loaded = DatabaseLoader(postgres.url, EXAMPLE).load()
    files = main(["policy", "check", str(EXAMPLE)])
    assert files == 0 and loaded.problems == ()
    assert main(["policy", "export", str(tmp_path / "out"), "--database", postgres.url]) == 0
    assert main(["policy", "check", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count(f"policy version {loaded.version}") >= 3  # import, check of files, check of export
    rule = loaded.decide("alice", "volume:eng-x", "mount").rule
    assert rule is not None and rule.file.startswith("casbin_rule@") and rule.line > 0


def test_import_refuses_a_broken_policy(postgres: Postgres, tmp_path: Path) -> None:
    """`policy import` checks first: a broken directory leaves the database as it was."""
    assert main(["policy", "import", str(EXAMPLE), "--database", postgres.url]) == 0
    version = DatabaseLoader(postgres.url, EXAMPLE).load().version
    (tmp_path / "model.conf").write_text((EXAMPLE / "model.conf").read_text())
    (tmp_path / "policy.csv").write_text("p, alice, volum:x, mount\n")
    assert main(["policy", "import", str(tmp_path), "--database", postgres.url]) == 1
    assert DatabaseLoader(postgres.url, EXAMPLE).load().version == version


async def test_notify_reloads_and_bad_rows_keep_last_good(postgres: Postgres) -> None:
    """An edit made with plain SQL reaches a listening store within seconds; a bad row is rejected."""
    assert main(["policy", "import", str(EXAMPLE), "--database", postgres.url]) == 0
    store = PolicyStore(EXAMPLE, loader=DatabaseLoader(postgres.url, EXAMPLE))
    assert not store.current.decide("dave", "api", "container.list").allowed
    ready = asyncio.Event()
    task = asyncio.create_task(listen(postgres.url, CHANNEL, store.reload, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.to_thread(
            _sql, postgres, "INSERT INTO casbin_rule (ptype, v0, v1) VALUES ('g', 'dave', 'role:eng')"
        )
        for _ in range(50):
            if store.current.decide("dave", "api", "container.list").allowed:
                break
            await asyncio.sleep(0.1)
        assert store.current.decide("dave", "api", "container.list").allowed
        good = store.current.version
        await asyncio.to_thread(
            _sql, postgres, "INSERT INTO casbin_rule (ptype, v0, v1, v2) VALUES ('p', 'dave', 'volume:*-x', 'mount')"
        )
        for _ in range(50):
            if store.failed_reloads:
                break
            await asyncio.sleep(0.1)
        assert store.failed_reloads == 1 and store.current.version == good
        assert (
            store.last_error is not None
            and "casbin_rule@" in store.last_error
            and "`*` before its end" in store.last_error
        )
    finally:
        task.cancel()
