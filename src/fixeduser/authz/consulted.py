"""Whether the daemon still asks fixeduser about every request.

dockerd forgets an authz plugin named only by its `--authorization-plugin` flag when it reloads its
configuration (SIGHUP, `systemctl reload docker`): 20.10, 26.1 and 28.5 alike then allow every request
without asking anyone (docs/engines.md#a-reload-drops-a-flag-plugin). Nothing tells the plugin; it can
only notice that a request of its own did not reach it. A check sends `GET /_ping?<PARAM>=<nonce>` and
looks whether that request's AuthZReq arrived before the answer did: the daemon asks its authz plugins
before it handles a request, so while fixeduser is asked, the AuthZReq always comes first.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from fixeduser.docker_api.daemon import DaemonError

log = logging.getLogger(__name__)

PARAM = "fixeduser-consulted"
FORBIDDEN = 403
RELOAD_SETTLE = 1.0
"""Seconds from the daemon's reload event to the check: 26.1 and 28.5 send the event from inside their
reload and only then replace their authz plugins, so a check at once could still be asked."""


class ConsultationCheck:
    """Checks (at start, after each daemon reload, every `interval`) that the daemon asks fixeduser."""

    def __init__(self, ping: Callable[[str], Awaitable[int]], *, interval: float = 60.0) -> None:
        self._ping = ping
        self._interval = interval
        self.waiting: dict[str, bool] = {}  # the URI of each check in flight: has its AuthZReq arrived?
        self.consulted: bool | None = None  # None: not known yet
        self.since = time.time()
        self.checks = 0
        self._lock = asyncio.Lock()

    def saw(self, uri: str) -> None:
        """An AuthZReq arrived for `uri` (called for every AuthZReq while a check waits)."""
        if uri in self.waiting:
            self.waiting[uri] = True

    async def check(self) -> bool | None:
        """Ask the daemon once; the answer is also kept. None when the daemon could not be asked."""
        async with self._lock:  # one at a time: a reload event during the periodic check waits for it
            uri = f"/_ping?{PARAM}={secrets.token_hex(8)}"
            self.waiting[uri] = False
            try:
                status = await self._ping(uri)
            except DaemonError as exc:
                log.debug("cannot check that the daemon asks fixeduser", extra={"error": str(exc)})
                return None
            finally:
                seen = self.waiting.pop(uri)
            if not seen and status == FORBIDDEN:
                # An authz plugin ahead of fixeduser in the daemon's list refused the ping: fixeduser's turn
                # never came, which says nothing about whether it would have.
                log.warning("an authorization plugin before fixeduser refused its check; the check proves nothing")
                return None
            self.checks += 1
            self._record(seen)
            return seen

    async def after_reload(self) -> None:
        await asyncio.sleep(RELOAD_SETTLE)
        await self.check()

    async def every(self) -> None:
        """Check every `interval` (a background task). The first check, and the one after a daemon restart or
        reload, come from the daemon's serving and reload events."""
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    def problems(self) -> list[str]:
        if self.consulted is not False:
            return []
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return [
            f"the Docker daemon no longer asks fixeduser about its requests (found {since}): it allows every "
            "request, and fixeduser's rules do not hold. A daemon reload (SIGHUP, `systemctl reload docker`) "
            "drops an authz plugin named by the --authorization-plugin flag: name it in daemon.json's "
            '"authorization-plugins" (`fixeduser install` does) and restart docker'
        ]

    def _record(self, consulted: bool) -> None:
        if consulted == self.consulted:
            return
        was, self.consulted, self.since = self.consulted, consulted, time.time()
        if not consulted:
            log.error("the Docker daemon no longer asks fixeduser about its requests: authorization is off")
        elif was is False:
            log.info("the Docker daemon asks fixeduser about its requests again")
