from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .postgres import Postgres, postgres_unavailable, start_postgres

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "policies" / "model.conf"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Callable[[str], Path]:
    """A policy directory with the shipped model and the given CSV text."""

    def make(csv: str, name: str = "policy.csv") -> Path:
        shutil.copy(MODEL, tmp_path / "model.conf")
        (tmp_path / name).write_text(csv)
        return tmp_path

    return make


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server for the whole session (skipped where it cannot run)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
