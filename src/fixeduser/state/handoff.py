"""The identity hand-off between the authz plugin and the volume driver.

Docker never tells a volume driver who is mounting. The authz plugin does know: it sees every
API request that can make the daemon mount a volume (container create, start, restart, archive)
with the authenticated user. Before allowing such a request it *claims* each fixeduser volume
the container uses for the identity of the container's owner; the claim ends with the request's
AuthZRes (Docker 20.10 sends it for failed requests too) or, as a backstop, a lease timeout.

The gate admits concurrent claims on a volume only when they are for the same identity; a claim
for a different identity waits until the volume is free. So while a `Mount` for a volume is in
flight, every live claim on that volume names one identity: the driver never has to guess.

Claims outlive the plugin process: each is written to a journal before the request that made it
is answered (`ClaimJournal`), and a restarted plugin takes them back with their remaining
lease. Docker retries a driver call that found no plugin for 30 s, so a `Mount` for a start allowed
just before a crash or restart reaches the new process; without its claim it would be refused, or
mounted for whichever identity holds the volume then.

Permits work the same way for `Create`/`Remove`, in memory only: the driver only creates or removes
a volume the authz plugin has just allowed someone to create or remove (one lost in a restart makes
that request fail, nothing more).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from fixeduser.linux.files import write_private_file
from fixeduser.policy.identity import Identity

log = logging.getLogger(__name__)


class GateBusy(Exception):
    """A volume stayed claimed for another identity for longer than a request may wait."""


@dataclass(frozen=True)
class Claim:
    key: str
    id: str  # unique across restarts: the journal's row
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
    journal: ClaimJournal | None = None
    _claims: list[Claim] = field(default_factory=list)
    _permits: list[Permit] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _serials: itertools.count[int] = field(default_factory=itertools.count)
    _run: str = field(default_factory=lambda: os.urandom(6).hex())

    def restore(self) -> int:
        """Take back the journal's live claims (made before a restart); returns how many."""
        if self.journal is None:
            return 0
        restored = [
            Claim(
                key=saved.key,
                id=saved.id,
                container=saved.container,
                owner=saved.owner,
                volumes=saved.volumes,
                expires=time.monotonic() + min(remaining, self.lease_seconds),  # the wall clock may have jumped
                for_create=saved.for_create,
            )
            for saved, remaining in self.journal.live()
        ]
        self._claims[:0] = restored
        return len(restored)

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
            claim = Claim(
                key=key,
                id=f"{self._run}.{next(self._serials)}",
                container=container,
                owner=owner,
                volumes=dict(volumes),
                expires=time.monotonic() + self.lease_seconds,
                for_create=for_create,
            )
            if self.journal is not None:
                try:
                    self.journal.save(claim, self.lease_seconds)
                except OSError as exc:  # unrecorded, a restart would lose it: refuse the request instead
                    raise GateBusy(
                        f"cannot record the claim of volume(s) {', '.join(sorted(volumes))}: {exc}"
                    ) from None
            self._claims.append(claim)

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
        if any(c.expires <= now for c in self._claims):
            ended = [c for c in self._claims if c.expires <= now]
            self._claims = [c for c in self._claims if c.expires > now]
            if self.journal is not None:
                for claim in ended:
                    self.journal.drop(claim, self._claims)
        if self._permits:
            self._permits = [p for p in self._permits if p.expires > now]

    def _next_expiry(self) -> float:
        return min((c.expires for c in self._claims), default=time.monotonic() + self.lease_seconds)

    async def release(self, key: str) -> None:
        """End the oldest claim made for this request key (identical keys claim identically)."""
        async with self._changed:
            for index, claim in enumerate(self._claims):
                if claim.key == key:
                    del self._claims[index]
                    if self.journal is not None:
                        self.journal.drop(claim, self._claims)
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


class SavedClaim(BaseModel):
    """A claim as the journal keeps it; `expires_at` is wall-clock time (monotonic time ends with the process)."""

    model_config = ConfigDict(frozen=True)

    id: str
    key: str
    container: str
    owner: str
    volumes: dict[str, Identity]
    for_create: bool
    expires_at: float


class Released(BaseModel):
    released: str  # a SavedClaim's id


JOURNAL_LINE: TypeAdapter[SavedClaim | Released] = TypeAdapter(SavedClaim | Released)


class ClaimJournal:
    """The gate's claims in an append-only file of JSON lines, so a restarted plugin still knows them.

    A claim is one write(2) on the event loop and then survives a crash of the process (a power
    cut ends every mount, so claims need no fsync); its end is another. Committing claims to the
    state store (then through a writer thread) cost each create and start with a fixeduser volume a
    thread hand-off on the AuthZReq the docker CLI waits for (bench/NOTES.md#claim-journal). Lines
    are written with orjson and read back through pydantic (`JOURNAL_LINE`). The file is emptied
    once it passes `EMPTY_AT` with no claim live, and rewritten with the live ones past
    `COMPACT_AT` (under a load that always has some).
    """

    EMPTY_AT = 1 << 16
    COMPACT_AT = 1 << 20

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._size = 0

    def save(self, claim: Claim, lease_seconds: float) -> None:
        """Append `claim`; once this returns, a crash can no longer lose it. Raises OSError."""
        self._append(_claim_line(claim, time.time() + lease_seconds))

    def drop(self, claim: Claim, live: Sequence[Claim]) -> None:
        """Forget `claim`, given the claims still live. A failure is logged: the claim then ends
        with its lease after a restart, the safe direction."""
        try:
            if not live and self._size >= self.EMPTY_AT:
                self._empty()
            elif self._size >= self.COMPACT_AT:
                self._rewrite(live)
            else:
                self._append(orjson.dumps({"released": claim.id}, option=orjson.OPT_APPEND_NEWLINE))
        except OSError as exc:
            log.warning("cannot record the end of a claim", extra={"claim": claim.id, "error": str(exc)})

    def live(self) -> list[tuple[SavedClaim, float]]:
        """The saved claims whose lease has not ended, oldest first, with the seconds left of each;
        the file is rewritten with just those. A line that cannot be read (torn by a crash in the
        middle of its write, before its request was answered) is logged and skipped."""
        saved: dict[str, SavedClaim] = {}
        with contextlib.suppress(FileNotFoundError), self._path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    entry = JOURNAL_LINE.validate_json(line)
                except ValidationError as exc:
                    log.warning("skipping an unreadable claim journal line", extra={"line": number, "error": str(exc)})
                    continue
                if isinstance(entry, Released):
                    saved.pop(entry.released, None)
                else:
                    saved[entry.id] = entry
        now = time.time()
        live = [(claim, claim.expires_at - now) for claim in saved.values() if claim.expires_at > now]
        self._write_file(b"".join(claim.model_dump_json().encode() + b"\n" for claim, _ in live))
        return live

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, line: bytes) -> None:
        written = os.write(self._opened(), line)
        self._size += written
        if written != len(line):  # a full disk, say: the line is torn, so the claim is not saved
            raise OSError(f"claim journal {self._path}: wrote {written} of {len(line)} bytes")

    def _empty(self) -> None:
        os.ftruncate(self._opened(), 0)
        self._size = 0

    def _opened(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def _rewrite(self, live: Sequence[Claim]) -> None:
        now, wall = time.monotonic(), time.time()
        self._write_file(b"".join(_claim_line(c, wall + c.expires - now) for c in live))

    def _write_file(self, content: bytes) -> None:
        """Replace the file at once (rename), so a crash leaves either the old or the new one."""
        self.close()
        write_private_file(self._path, content, 0o600)
        self._size = len(content)


def _claim_line(claim: Claim, expires_at: float) -> bytes:
    """A `SavedClaim` line, built directly: constructing the model first is needless work per claim."""
    return orjson.dumps(
        {
            "id": claim.id,
            "key": claim.key,
            "container": claim.container,
            "owner": claim.owner,
            "volumes": {
                name: {"uid": i.uid, "gid": i.gid, "user": i.user, "group": i.group}
                for name, i in claim.volumes.items()
            },
            "for_create": claim.for_create,
            "expires_at": expires_at,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
