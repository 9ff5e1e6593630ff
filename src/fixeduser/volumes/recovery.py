"""Starting the containers whose mount fixeduser had to refuse for want of an owner it could be sure of.

The daemon restores its restart-policy containers at start, mounting their volumes before its
API answers, and does not retry a start that failed then; the restart manager does not retry a
failed restart either. fixeduser refuses such mounts rather than guess (`fixeduser.volumes.resolve`),
so once the daemon answers it starts those containers itself: one at a time, each through its
own authz plugin as a start by the container's owner, so that each is claimed for that owner.

A container qualifies only on the daemon's word: it mounts a fixeduser volume, it has a restart
policy, it is not running, and its last start failed with fixeduser's refusal. Each is tried a few
times, with growing pauses, then left with a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fixeduser.docker_api.daemon import DaemonError, ListedContainer
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.restarts import NO_RESTART, restart_policy_of
from fixeduser.volumes.resolve import RECOVERY_PROMISE

log = logging.getLogger(__name__)

STOPPED = ("exited", "created")


class RecoveryDaemon(Protocol):
    """The daemon calls the recovery makes (`fixeduser.docker_api.daemon.DaemonClient`)."""

    async def containers_using(self, volume: str, *, states: tuple[str, ...] = ()) -> list[ListedContainer]: ...

    async def inspect_container(self, reference: str) -> dict[str, Any] | None: ...

    async def start_container(self, container_id: str) -> None: ...


class Serving(Protocol):
    @property
    def serving(self) -> bool: ...


class Recovery:
    def __init__(
        self,
        *,
        daemon: RecoveryDaemon,
        ledger: ContainerLedger,
        volumes: Callable[[], Iterable[str]],
        liveness: Serving | None = None,
        attempts: int = 3,
        delay: float = 1.0,
    ) -> None:
        self._daemon = daemon
        self._ledger = ledger
        self._volumes = volumes
        self._liveness = liveness
        self._attempts = attempts
        self._delay = delay
        self._starting: set[str] = set()
        self._refused: set[str] = set()  # volumes with a refused mount since the last pass
        self._everything = True  # the first pass looks at every volume (refusals before a plugin restart)
        self._tries: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._later: asyncio.Task[None] | None = None

    def is_starting(self, container_id: str) -> bool:
        """Whether fixeduser itself is starting this container now (its authz lets exactly that through)."""
        return container_id in self._starting

    def mount_refused(self, volume: str) -> None:
        """A mount no API request announced was refused: look at the volume's containers soon."""
        self._refused.add(volume)
        if self._liveness is None or self._liveness.serving:
            self._schedule(self._delay)  # else: when the daemon answers again (`run_pass` is its listener)

    def _schedule(self, delay: float) -> None:
        """One later pass at a time; a pass that asks for a retry schedules the next one (it is itself `_later`)."""
        if self._later is None or self._later.done() or self._later is asyncio.current_task():
            self._later = asyncio.create_task(self._pass_after(delay))

    async def _pass_after(self, delay: float) -> None:
        await asyncio.sleep(delay)  # the daemon records the failed start first
        await self.run_pass()

    async def run_pass(self) -> int:
        """Start the containers that qualify; returns how many started."""
        async with self._lock:
            known = set(self._volumes())
            volumes = known if self._everything else self._refused & known
            self._everything = False
            self._refused -= volumes
            started, retry = 0, False
            for volume in sorted(volumes):
                try:
                    stopped = await self._daemon.containers_using(volume, states=STOPPED)
                except DaemonError as exc:
                    log.warning(
                        "cannot list a volume's containers to recover", extra={"volume": volume, "error": str(exc)}
                    )
                    self._refused.add(volume)
                    retry = True
                    continue
                for container in stopped:
                    outcome = await self._recover(container.id)
                    started += outcome is True
                    if outcome is False and self._tries[container.id] < self._attempts:
                        self._refused.add(volume)
                        retry = True
            if retry:
                self._schedule(self._delay * 4 ** max(self._tries.values(), default=1))
            return started

    async def _recover(self, container_id: str) -> bool | None:
        """True: started; False: its start failed; None: it does not qualify."""
        if self._tries[container_id] >= self._attempts or not await self._qualifies(container_id):
            return None
        record = self._ledger.get(container_id)
        if record is None:
            log.warning("a container to recover has no known owner", extra={"container": container_id})
            return None
        self._tries[container_id] += 1
        self._starting.add(container_id)
        try:
            await self._daemon.start_container(container_id)
        except DaemonError as exc:
            log.warning(
                "cannot start a container the daemon could not restart",
                extra={"container": container_id, "owner": record.owner, "error": str(exc)},
            )
            return False
        finally:
            self._starting.discard(container_id)
        del self._tries[container_id]  # started: a later refusal starts counting again
        log.info(
            "started a container the daemon could not restart", extra={"container": container_id, "owner": record.owner}
        )
        return True

    async def _qualifies(self, container_id: str) -> bool:
        try:
            info = await self._daemon.inspect_container(container_id)
        except DaemonError:
            return False
        if info is None:
            return False
        state = info.get("State") or {}
        return (
            restart_policy_of(info) not in NO_RESTART
            and state.get("Status") in STOPPED
            and RECOVERY_PROMISE in str(state.get("Error", ""))
        )
