"""The identity hand-off between the authz plugin and the volume driver.

Docker never tells a volume driver who is mounting. The authz plugin does know: it sees every
API request that can make the daemon mount a volume (container create, start, restart, archive)
with the authenticated user. Before allowing such a request it *claims* each fixeduser volume
the container uses for the identity of the container's owner; the claim ends with the request's
AuthZRes (Docker 20.10 sends it for failed requests too) or, as a backstop, a lease timeout.

The gate admits concurrent claims on a volume only when they are for the same identity; a claim
for a different identity waits until the volume is free. So while a `Mount` for a volume is in
flight, every live claim on that volume names one identity: the driver never has to guess.

Permits work the same way for `Create`/`Remove`: the driver only creates or removes a volume the
authz plugin has just allowed someone to create or remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from fixeduser.identity import Identity


class GateBusy(Exception):
    """A volume stayed claimed for another identity for longer than a request may wait."""


@dataclass(frozen=True)
class Claim:
    key: str
    serial: int
    container: str
    owner: str
    volumes: Mapping[str, Identity]
    expires: float
    # A container create mounts volumes only to copy image content in; a start mounts them for real.
    for_create: bool = False


@dataclass(frozen=True)
class Permit:
    key: str
    kind: str
    volume: str
    subject: str
    options: Mapping[str, str]
    expires: float


@dataclass
class MountGate:
    """Claims of volumes for identities, and permits for volume creation and removal."""

    lease_seconds: float = 30.0
    wait_seconds: float = 50.0
    _claims: list[Claim] = field(default_factory=list)
    _permits: list[Permit] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _serials: itertools.count[int] = field(default_factory=itertools.count)

    async def claim(
        self, key: str, *, container: str, owner: str, volumes: Mapping[str, Identity], for_create: bool = False
    ) -> None:
        """Claim `volumes` (name -> identity) for a request; waits while another identity holds one."""
        if not volumes:
            return
        deadline = time.monotonic() + self.wait_seconds
        async with self._changed:
            while conflict := self._conflict(volumes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GateBusy(
                        f"volume {conflict} is being mounted for another identity and stayed busy for "
                        f"{self.wait_seconds:.0f} s; try again"
                    )
                # Wake at the earliest lease expiry too: a claim may end without an AuthZRes.
                await self._wait(min(remaining, self._next_expiry() - time.monotonic()))
            self._claims.append(
                Claim(
                    key=key,
                    serial=next(self._serials),
                    container=container,
                    owner=owner,
                    volumes=dict(volumes),
                    expires=time.monotonic() + self.lease_seconds,
                    for_create=for_create,
                )
            )

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=max(seconds, 0.01))

    def _conflict(self, volumes: Mapping[str, Identity]) -> str | None:
        self._expire()
        for claim in self._claims:
            for volume, identity in volumes.items():
                held = claim.volumes.get(volume)
                if held is not None and held != identity:
                    return volume
        return None

    def _expire(self) -> None:
        now = time.monotonic()
        self._claims = [c for c in self._claims if c.expires > now]
        self._permits = [p for p in self._permits if p.expires > now]

    def _next_expiry(self) -> float:
        return min((c.expires for c in self._claims), default=time.monotonic() + self.lease_seconds)

    async def release(self, key: str) -> None:
        """End the oldest claim made for this request key (identical keys claim identically)."""
        async with self._changed:
            for index, claim in enumerate(self._claims):
                if claim.key == key:
                    del self._claims[index]
                    self._changed.notify_all()
                    return

    def claims_on(self, volume: str) -> list[tuple[Claim, Identity]]:
        self._expire()
        return [(c, c.volumes[volume]) for c in self._claims if volume in c.volumes]

    def grant(self, key: str, *, kind: str, volume: str, subject: str, options: Mapping[str, str]) -> None:
        """Allow the driver one `kind` ("create" or "remove") of `volume` during this request."""
        self._permits.append(
            Permit(
                key=key,
                kind=kind,
                volume=volume,
                subject=subject,
                options=dict(options),
                expires=time.monotonic() + self.lease_seconds,
            )
        )

    def take(self, kind: str, volume: str) -> Permit | None:
        """Consume the oldest live permit of `kind` for `volume` (or for every volume: `*`)."""
        self._expire()
        for index, permit in enumerate(self._permits):
            if permit.kind == kind and permit.volume in (volume, "*"):
                if permit.volume != "*":
                    del self._permits[index]
                return permit
        return None

    def revoke(self, key: str) -> None:
        """Drop the permits of a finished request (the wildcard ones of a prune, say)."""
        self._permits = [p for p in self._permits if p.key != key]
