"""One real stack for the end-to-end suite: fixeduser serve + a private TLS dockerd using it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixeduser.sandbox import (
    Engine,
    PluginProcess,
    Stack,
    dockerd_available,
    make_private_dir,
    mounts_under,
    start_stack,
)
from tests.waiting import Described, wait_until

REPO = Path(__file__).resolve().parents[2]
E2E_USERS = ("alice", "bob", "carol", "dave", "@local")


def _e2e_possible() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not dockerd_available() or shutil.which("bindfs") is None:
        return "needs dockerd and bindfs (run scripts/setup)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _e2e_possible()
    for item in items:
        if "e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class E2E:
    """A running stack plus assertions that show the plugin's log when a docker command surprises."""

    stack: Stack

    @property
    def engine(self) -> Engine:
        return self.stack.dockerd.engine

    @property
    def plugin(self) -> PluginProcess:
        return self.stack.plugin

    @property
    def driver(self) -> str:
        return self.stack.driver

    def docker(self, *args: str, user: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.stack.docker(*args, user=user, timeout=timeout)

    def ok(self, *args: str, user: str | None = None, timeout: float = 90) -> str:
        result = self.docker(*args, user=user, timeout=timeout)
        assert result.returncode == 0, (
            f"docker {' '.join(args)} as {user or '@local'} failed:\n{result.stderr}\n"
            f"--- plugin log ---\n{self.plugin.log_tail()}"
        )
        return result.stdout

    def wait(self, condition: Callable[[], object], what: Described, *, within: float = 45) -> None:
        """Wait until `condition()` holds; a timeout says what was awaited and shows the plugin's log."""
        wait_until(
            condition,
            lambda: f"{what if isinstance(what, str) else what()}\n--- plugin log ---\n{self.plugin.log_tail(200)}",
            within=within,
            every=0.2,
        )

    def denied(self, *args: str, user: str | None = None) -> str:
        result = self.docker(*args, user=user)
        assert result.returncode != 0, f"docker {' '.join(args)} as {user} should have failed:\n{result.stdout}"
        return result.stderr


# An idle view stays 1 s instead of the default 60: the view-reuse path is still exercised (a docker run mounts
# twice within that), and tests that wait for views to go are not slowed.
SHORT_VIEW_GRACE = ("--view-idle-seconds", "1")


def new_stack(base: Path, engine: Engine) -> E2E:
    policy_dir = base / "policies"
    shutil.copytree(REPO / "policies", policy_dir)
    # A short prune delay lets a test see removed containers forgotten without waiting the default 30 s.
    extra = (*SHORT_VIEW_GRACE, "--ledger-prune-delay", "2")
    return E2E(start_stack(base, policy_dir=policy_dir, users=E2E_USERS, extra_args=extra, engine=engine))


def own_stack(
    engine: Engine, *, name: str, prefix: str, extra_args: tuple[str, ...] = (), **start: Any
) -> Iterator[E2E]:
    """A stack of a test module's own, for `yield from` in its fixture: the repository's policies in a private
    folder `fu-<name>-...`, the short view grace and `extra_args` on the plugin's command line, `start` passed to
    `start_stack`; stopped afterwards, and its folder removed unless something stayed mounted."""
    base = make_private_dir(Path(tempfile.gettempdir()), prefix=f"fu-{name}-")
    shutil.copytree(REPO / "policies", base / "policies")
    extra = (*SHORT_VIEW_GRACE, *extra_args)
    running = E2E(
        start_stack(
            base, policy_dir=base / "policies", users=E2E_USERS, prefix=prefix, engine=engine, extra_args=extra, **start
        )
    )
    try:
        yield running
    finally:
        if not running.stack.stop():
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder that the identities' bindfs processes can traverse.

    Not under pytest's temp tree: pytest resets `/tmp/pytest-of-root` to 0700 whenever a session
    starts, which would cut the FUSE daemons (running as uid 10001...) off their source folders.
    """
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fu-e2e-")
    yield base
    if not mounts_under(base):  # never delete through a mount
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(engine: Engine) -> Iterator[E2E]:
    """One stack per engine, shared by every test that runs on that engine."""
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fu-e2e-")
    running = new_stack(base, engine)
    try:
        yield running
    finally:
        leftovers = running.stack.stop()
        if not leftovers:
            shutil.rmtree(base, ignore_errors=True)
