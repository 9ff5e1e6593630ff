"""ConsultationCheck: a check's verdict is whether its own ping's AuthZReq arrived before the ping's answer."""

from __future__ import annotations

import pytest

from fixeduser.authz.consulted import PARAM, ConsultationCheck
from fixeduser.docker_api.daemon import DaemonUnavailable


class Daemon:
    """Answers pings; while `asks`, it first hands the request to the authz plugin, as dockerd does."""

    def __init__(self) -> None:
        self.asks = True
        self.down = False
        self.check: ConsultationCheck | None = None
        self.pinged: list[str] = []
        self.refused_before = False  # an authz plugin ahead of fixeduser in the daemon's list denies the ping

    async def ping(self, uri: str) -> int:
        if self.down:
            raise DaemonUnavailable("cannot reach the Docker daemon")
        self.pinged.append(uri)
        if self.refused_before:
            return 403
        if self.asks and self.check is not None and self.check.waiting:
            self.check.saw("/containers/json")  # another request's AuthZReq proves nothing
            self.check.saw(uri)
        return 200


@pytest.fixture
def daemon() -> Daemon:
    return Daemon()


@pytest.fixture
def check(daemon: Daemon) -> ConsultationCheck:
    daemon.check = ConsultationCheck(daemon.ping)
    return daemon.check


async def test_a_daemon_that_asks_is_consulted_and_each_check_pings_a_new_uri(
    daemon: Daemon, check: ConsultationCheck
) -> None:
    assert check.consulted is None and check.problems() == []
    assert await check.check() is True
    assert await check.check() is True
    assert check.consulted is True and check.checks == 2 and check.problems() == []
    assert len(set(daemon.pinged)) == 2 and all(uri.startswith(f"/_ping?{PARAM}=") for uri in daemon.pinged)
    assert check.waiting == {}


async def test_a_daemon_that_stops_asking_is_a_problem_until_it_asks_again(
    daemon: Daemon, check: ConsultationCheck
) -> None:
    await check.check()
    daemon.asks = False
    assert await check.check() is False
    assert check.consulted is False
    [problem] = check.problems()
    assert "no longer asks fixeduser" in problem and "--authorization-plugin flag" in problem
    daemon.asks = True
    assert await check.check() is True
    assert check.problems() == []


async def test_a_daemon_that_cannot_be_reached_leaves_the_last_verdict(
    daemon: Daemon, check: ConsultationCheck
) -> None:
    daemon.asks = False
    await check.check()
    daemon.down = True
    assert await check.check() is None
    assert check.consulted is False and check.checks == 1 and check.waiting == {}


async def test_a_ping_refused_by_a_plugin_ahead_of_fixeduser_proves_nothing(
    daemon: Daemon, check: ConsultationCheck
) -> None:
    await check.check()
    daemon.refused_before = True
    assert await check.check() is None
    assert check.consulted is True and check.checks == 1 and check.problems() == []
