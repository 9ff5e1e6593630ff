"""Fixtures shared by several test folders, and the `--engines` option."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixeduser.sandbox import Engine, available_engines
from tests.policy.postgres import Postgres, postgres_unavailable, start_postgres


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engines",
        default=None,
        help="comma list of Docker engines for the tests that run a dockerd, e.g. 20.10,28.5 "
        "(default: every installed engine; scripts/setup installs 20.10, 26.1 and 28.5)",
    )


def selected_engines(requested: str | None) -> list[Engine]:
    """The engines of an `--engines` value, or every available one (None); a requested engine that is missing
    is an error."""
    available = {engine.name: engine for engine in available_engines()}
    if requested is None:
        return list(available.values())
    names = [name.strip() for name in requested.split(",") if name.strip()]
    missing = [name for name in names if name not in available]
    if missing or not names:
        raise pytest.UsageError(
            f"--engines {requested}: {', '.join(missing) or 'no engine'} not installed; "
            f"installed: {', '.join(available) or 'none'} (scripts/setup installs 20.10, 26.1 and 28.5)"
        )
    return [available[name] for name in dict.fromkeys(names)]


def pytest_configure(config: pytest.Config) -> None:
    requested = config.getoption("--engines")
    if requested is not None:
        selected_engines(requested)  # fail before collection, even if no test asks for an engine


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        engines = selected_engines(metafunc.config.getoption("--engines"))
        metafunc.parametrize("engine", engines, ids=[f"engine={e.name}" for e in engines], indirect=True)


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Engine:
    """The Docker engine (dockerd, docker CLI, docker-compose) a test's daemons run; one per `--engines` entry."""
    chosen: Engine = request.param
    return chosen


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


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of one test's own, which the test may stop and start (`halt`, `resume`)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
