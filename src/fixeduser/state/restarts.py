"""Which containers the daemon may restart by their restart policy, per fixeduser volume.

A `Mount` asks the daemon which containers are restarting with its volume (`fixeduser.volumes.resolve`):
the larger half of its cost (bench/NOTES.md#restart-candidates). Only a container whose restart policy is
not `no` can be restarting (the daemon's restart manager sets that state, and only for such a policy), so
when no container the daemon has may restart with a volume, the answer is known to be "none" without asking.

The set is never smaller than the truth, and it holds only the daemon's word:

- a full reading (every container's mounts from the daemon's list, the restart policy of each that mounts a
  fixeduser volume from its description) at the plugin's start and each time the daemon's API answers again;
- the description the daemon gives of each container that fixeduser allows to be started or restarted (the
  restart manager restarts only containers that ran), read before the start is allowed;
- an allowed `docker update` may set a restart policy on any container (the daemon resolves its reference
  again, after the decision): from its AuthZReq until a full reading that began after its AuthZRes, the set
  is not known, and every `Mount` asks the daemon as before. Such updates are recorded before they are
  allowed, so one allowed just before a plugin restart still counts; an update whose AuthZRes never comes
  (another authz plugin denied it, the daemon gave up on a stopped plugin) counts until the daemon restarts.

Containers leave the set only by a full reading that no longer finds them with such a policy.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fixeduser.docker_api.daemon import DaemonError, ListedContainer
from fixeduser.state.store import StateStore

log = logging.getLogger(__name__)

NO_RESTART = frozenset({"", "no"})  # the restart policies under which the daemon never restarts a container

_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates_in_flight (token TEXT PRIMARY KEY, request TEXT NOT NULL, since REAL NOT NULL)
"""


class DaemonContainers(Protocol):
    """What a full reading asks the daemon (`fixeduser.docker_api.daemon.DaemonClient`)."""

    async def all_containers(self) -> list[ListedContainer]: ...

    async def inspect_container(self, reference: str) -> dict[str, Any] | None: ...


def restart_policy_of(described: dict[str, Any]) -> str:
    """The restart policy name in a container's description from the daemon ("" when it shows none)."""
    host_config = described.get("HostConfig")
    policy = host_config.get("RestartPolicy") if isinstance(host_config, dict) else None
    name = policy.get("Name") if isinstance(policy, dict) else None
    return name if isinstance(name, str) else ""


class RestartCandidates:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        store.execute(_SCHEMA)
        self._updates: dict[str, str] = dict(  # token -> request key, oldest first
            store.query("SELECT token, request FROM updates_in_flight ORDER BY since")
        )
        self._by_volume: dict[str, set[str]] = {}
        self._generation = 0  # moves on at each update's answer and each return of the daemon's API
        self._read_at: int | None = None  # the generation the last finished full reading began in
        self._noted_while_reading: list[tuple[str, tuple[str, ...]]] | None = None
        self._seen_serving = False
        self._stale = asyncio.Event()  # set by the daemon's first answer (`daemon_serving`) and every change

    @property
    def known(self) -> bool:
        """Whether every container the daemon may restart with a fixeduser volume is in the set now."""
        return not self._updates and self._read_at == self._generation

    def may_restart_with(self, volume: str) -> bool:
        """False only when the daemon has no container that may restart with `volume`."""
        return not self.known or bool(self._by_volume.get(volume))

    def note(self, container_id: str, policy: str, volumes: Iterable[str]) -> None:
        """The daemon described `container_id` (about to be started) with this restart policy and volumes."""
        if policy in NO_RESTART:
            return
        named = tuple(volumes)
        self._add(container_id, named)
        if self._noted_while_reading is not None:
            self._noted_while_reading.append((container_id, named))

    def _add(self, container_id: str, volumes: Iterable[str]) -> None:
        for volume in volumes:
            self._by_volume.setdefault(volume, set()).add(container_id)

    async def update_allowed(self, request: str) -> None:
        """An update (of a container the daemon resolves later) is about to be allowed: recorded first."""
        token = secrets.token_hex(8)
        await self._store.write(
            "INSERT INTO updates_in_flight (token, request, since) VALUES (?, ?, ?)", (token, request, time.time())
        )
        self._updates[token] = request

    async def update_answered(self, request: str) -> None:
        """The daemon answered an update (it has applied it, or never will): a full reading is due."""
        token = next((t for t, r in self._updates.items() if r == request), None)
        if token is not None:
            del self._updates[token]
            await self._store.write("DELETE FROM updates_in_flight WHERE token = ?", (token,))
        self._move_on()

    async def daemon_serving(self) -> None:
        """The daemon's API answers: at the first time, or again after it stopped, when the requests sent to
        the daemon that stopped can no longer be applied (a full reading follows either way)."""
        if self._seen_serving and self._updates:
            log.info("updates in flight ended with the daemon", extra={"updates": len(self._updates)})
            self._updates.clear()
            await self._store.write("DELETE FROM updates_in_flight")
        self._seen_serving = True
        self._move_on()

    def _move_on(self) -> None:
        self._generation += 1
        self._stale.set()

    async def keep_read(
        self, daemon: DaemonContainers, is_ours: Callable[[str], bool], *, retry: float = 1.0, most: float = 60.0
    ) -> None:
        """Read whenever the set may have changed, from the daemon's first answer on (a background task); a
        reading that fails is tried again, less and less often."""
        pause = retry
        while True:
            await self._stale.wait()
            try:
                await self.read(daemon, is_ours)
            except DaemonError as exc:
                log.info("cannot read which containers may restart now", extra={"error": str(exc), "retry_in": pause})
                await asyncio.sleep(pause)
                pause = min(pause * 2, most)
            else:
                pause = retry

    async def read(self, daemon: DaemonContainers, is_ours: Callable[[str], bool]) -> None:
        """A full reading from the daemon (a DaemonError leaves the set not known, to be read again)."""
        self._stale.clear()
        began = self._generation
        self._noted_while_reading = []
        try:
            found: dict[str, set[str]] = {}
            for container in await daemon.all_containers():
                volumes = [m.name for m in container.mounts if m.type == "volume" and is_ours(m.driver)]
                if not volumes:
                    continue
                described = await daemon.inspect_container(container.id)
                if described is not None and restart_policy_of(described) not in NO_RESTART:
                    for volume in volumes:
                        found.setdefault(volume, set()).add(container.id)
            self._by_volume = found
            for container_id, noted in self._noted_while_reading:
                self._add(container_id, noted)
        except BaseException:
            self._stale.set()
            raise
        finally:
            self._noted_while_reading = None
        self._read_at = began
        if self._generation != began:
            self._stale.set()
        log.info("containers that may restart with fixeduser volumes read from the daemon", extra=self.status())

    def status(self) -> dict[str, object]:
        return {
            "known": self.known,
            "containers": len(set().union(*self._by_volume.values())) if self._by_volume else 0,
            "volumes": len(self._by_volume),
            "updates_in_flight": len(self._updates),
        }
