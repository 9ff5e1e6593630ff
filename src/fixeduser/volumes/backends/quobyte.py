"""Quobyte backend: volumes made through the Quobyte API, fixed-user access by the Quobyte client.

One Quobyte client mount serves every volume and identity. Mounted with
``mount.quobyte --allow-usermapping-in-volumename <registry>/ <mountpoint>``, the client does
every access below ``<mountpoint>/<user>#<group>@<volume>`` as that user and group, so there is
nothing to mount per identity: `volume_path` names that path and `mount_identity` only makes
sure the client mount is up (repairing a stale one when the plugin started it).

Volumes are created and deleted with the Quobyte API, JSON-RPC 2.0 over HTTP POST with basic
auth (`QuobyteClient`). Removing a volume keeps it in Quobyte unless purge was chosen; only a
purge calls `deleteVolume`, by the UUID the volume's name resolves to in its tenant, so it can
never touch another volume.

`client` says how the client mount is obtained:

* ``start``: use a Quobyte mount found on `mountpoint`, else run `mount.quobyte` (needs `registry`);
* ``existing``: a Quobyte (FUSE) mount must already be on `mountpoint`; the plugin never mounts;
* ``directory``: `mountpoint` is a plain directory standing in for the client (tests and demos
  only: no user mapping happens unless something else provides the ``user#group@volume`` paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import requests

from fixeduser.linux.mounts import is_stale, mounts_at
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import BackendError, validate_volume_name

log = logging.getLogger(__name__)

ClientMode = Literal["start", "existing", "directory"]

# JSON-RPC 2.0 standard codes. Entity errors are recognised by the symbol the Quobyte API puts in
# its error message, e.g. "ENTITY_EXISTS_ALREADY/POSIX_ERROR_NONE" (what Quobyte's own Docker
# volume plugin and CSI driver test for); their numeric codes are not published, so the two below
# (also used by the test double, tests/quobyte_api.py) are only a second way to match.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
ENTITY_NOT_FOUND, ENTITY_EXISTS = -24, -25
ERROR_HINTS = {
    PARSE_ERROR: "the API could not parse the request (a proxy in between?)",
    INVALID_REQUEST: "the API rejected the request format (an incompatible Quobyte release?)",
    METHOD_NOT_FOUND: "the API does not know this method (an incompatible Quobyte release?)",
    INVALID_PARAMS: "the API rejected the parameters (check tenant and configuration names)",
    INTERNAL_ERROR: "the Quobyte API failed internally; see its logs",
    ENTITY_NOT_FOUND: "no such entity (volume, tenant or configuration)",
    ENTITY_EXISTS: "it exists already",
}
DEFAULT_TIMEOUT = 10.0
MOUNT_TIMEOUT = 60.0
APPEAR_TIMEOUT = 10.0  # a new volume may take a moment to show up in the client mount
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


HEALTH_PROBE_NAME = ".fixeduser-health-probe"  # not a valid volume name: never a real volume


class QuobyteError(BackendError):
    """A Quobyte API failure; `code` is the JSON-RPC error code (None for HTTP/transport errors)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _is(error: QuobyteError, code: int, symbol: str) -> bool:
    return error.code == code or symbol in str(error)


class QuobyteClient:
    """Blocking JSON-RPC client for the Quobyte API (call it from a worker thread).

    One `requests.Session` (one connection pool, basic auth) is reused under a lock. Transient
    failures (connection errors, timeouts, HTTP 5xx) are retried `retries` times with exponential
    backoff; everything else fails at once with a message naming the cause.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str,
        password: str,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.url = url
        self.user = user
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()
        self._session.auth = (user, password)
        self._session.headers["Content-Type"] = "application/json"
        self._lock = threading.Lock()
        self._ids = 0

    def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """Call `method`; its `result`, or QuobyteError."""
        with self._lock:
            self._ids += 1
            body = {"jsonrpc": "2.0", "id": str(self._ids), "method": method, "params": dict(params)}
            for attempt in range(self.retries + 1):
                try:
                    return self._post(method, body)
                except _Transient as exc:
                    if attempt == self.retries:
                        raise QuobyteError(
                            f"Quobyte API {self.url} unavailable for {method} after {attempt + 1} attempts: {exc}"
                        ) from None
                    delay = self.backoff * 2**attempt
                    log.warning("quobyte API call failed, retrying", extra={"method": method, "error": str(exc)})
                    time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, method: str, body: dict[str, Any]) -> Any:
        try:
            response = self._session.post(self.url, json=body, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code in (401, 403):
            raise QuobyteError(
                f"Quobyte API {self.url} refused user {self.user!r} (HTTP {response.status_code}): check "
                "--quobyte-user and --quobyte-password-file"
            )
        if response.status_code != 200:
            raise QuobyteError(f"Quobyte API {self.url} answered HTTP {response.status_code} to {method}")
        try:
            answer = response.json()
        except ValueError:
            raise QuobyteError(f"Quobyte API {self.url} sent a reply to {method} that is not JSON") from None
        if not isinstance(answer, dict):
            raise QuobyteError(f"Quobyte API {self.url} sent a malformed reply to {method}")
        error = answer.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            hint = ERROR_HINTS.get(code, "") if isinstance(code, int) else ""
            raise QuobyteError(
                f"Quobyte API {method} failed (code {code}): {message}" + (f" - {hint}" if hint else ""),
                code=code if isinstance(code, int) else None,
            )
        return answer.get("result")

    def create_volume(
        self, name: str, *, root_user_id: str, root_group_id: str, configuration: str, tenant: str
    ) -> str:
        result = self.call(
            "createVolume",
            {
                "name": name,
                "root_user_id": root_user_id,
                "root_group_id": root_group_id,
                "configuration_name": configuration,
                "tenant_id": tenant,
            },
        )
        return str((result or {}).get("volume_uuid", ""))

    def resolve_volume(self, name: str, *, tenant: str) -> str | None:
        """The UUID of volume `name` in `tenant`, or None if there is none."""
        try:
            result = self.call("resolveVolumeName", {"volume_name": name, "tenant_domain": tenant})
        except QuobyteError as exc:
            if _is(exc, ENTITY_NOT_FOUND, "ENTITY_NOT_FOUND"):
                return None
            raise
        uuid = (result or {}).get("volume_uuid")
        return str(uuid) if uuid else None

    def delete_volume(self, uuid: str) -> None:
        self.call("deleteVolume", {"volume_uuid": uuid})

    def volume_list(self) -> list[dict[str, Any]]:
        result = self.call("getVolumeList", {})
        volumes = (result or {}).get("volume", [])
        return [v for v in volumes if isinstance(v, dict)]

    def close(self) -> None:
        self._session.close()


class _Transient(Exception):
    """A failure worth retrying."""


def _check_mapping_name(kind: str, value: str, identity: Identity) -> str:
    if not value or value in {".", ".."} or any(c in value for c in "/#@\0"):
        raise BackendError(f"{kind} {value!r} of identity {identity} cannot be used in a Quobyte user-mapped path")
    return value


class QuobyteBackend:
    """Quobyte volumes behind one client mount; scope `global` (every host sees the same volumes)."""

    name: str = "quobyte"
    scope: Literal["local", "global"] = "global"

    def __init__(
        self,
        *,
        client: QuobyteClient,
        mountpoint: Path,
        tenant: str,
        configuration: str,
        client_mode: ClientMode = "start",
        registry: str | None = None,
        mount_command: str = "mount.quobyte",
    ) -> None:
        if not mountpoint.is_absolute():
            raise BackendError(f"the Quobyte mount point must be an absolute path, not {mountpoint}")
        if client_mode == "start" and not registry:
            raise BackendError("--quobyte-client start needs --quobyte-registry (the registry the client mounts)")
        self.client = client
        self.mountpoint = mountpoint
        self.tenant = tenant
        self.configuration = configuration
        self.client_mode = client_mode
        self.registry = registry
        self.mount_command = mount_command
        self._client_lock = asyncio.Lock()

    # ------------------------------------------------------------------ the client mount

    async def check(self) -> None:
        """Make sure the client mount is usable (mounting or repairing it in `start` mode)."""
        async with self._client_lock:
            await self._ensure_client()

    async def check_service(self) -> None:
        """One cheap API call (resolve a name no volume can have): reachable, and our credentials accepted."""
        try:
            await asyncio.to_thread(self.client.resolve_volume, HEALTH_PROBE_NAME, tenant=self.tenant)
        except BackendError as exc:
            raise BackendError(f"the Quobyte API is unusable: {exc}") from None

    async def _ensure_client(self) -> None:
        mp = self.mountpoint
        if self.client_mode == "directory":
            if not await asyncio.to_thread(mp.is_dir):
                raise BackendError(f"{mp} (the stand-in for the Quobyte client mount) is not a directory")
            return
        mounted = await asyncio.to_thread(mounts_at, mp)
        stale = bool(mounted) and await asyncio.to_thread(is_stale, mp)
        if mounted and not stale:
            return
        if self.client_mode == "existing":
            state = "stale (transport endpoint is not connected)" if stale else "not mounted"
            raise BackendError(
                f"the Quobyte client on {mp} is {state}: mount it with `mount.quobyte "
                f"--allow-usermapping-in-volumename <registry>/ {mp}`, or run with --quobyte-client start"
            )
        if stale:
            log.warning("Quobyte client mount %s is stale: unmounting it lazily and mounting again", mp)
            await _run(["umount", "-l", str(mp)], limit=MOUNT_TIMEOUT)
        await asyncio.to_thread(mp.mkdir, parents=True, exist_ok=True)
        argv = [self.mount_command, "--allow-usermapping-in-volumename", f"{self.registry}/", str(mp)]
        rc, err = await _run(argv, limit=MOUNT_TIMEOUT)
        if rc != 0 or not await asyncio.to_thread(mounts_at, mp):
            raise BackendError(f"mounting the Quobyte client on {mp} failed (exit status {rc}): {err or 'no output'}")
        log.info("mounted the Quobyte client on %s", mp)

    async def mount_identity(self, identity: Identity) -> Path:
        """Nothing per identity: the client maps users by path. Checks (and repairs) the client mount."""
        if identity.uid == 0 or identity.gid == 0:
            raise BackendError(f"identity {identity} is root: a fixed identity must not be root")
        _check_mapping_name("user", identity.user, identity)
        _check_mapping_name("group", identity.group, identity)
        async with self._client_lock:
            await self._ensure_client()
        return self.mountpoint

    def volume_path(self, identity: Identity, volume: str) -> Path:
        """`<mountpoint>/<user>#<group>@<volume>`: the client does every access there as user:group."""
        user = _check_mapping_name("user", identity.user, identity)
        group = _check_mapping_name("group", identity.group, identity)
        return self.mountpoint / f"{user}#{group}@{validate_volume_name(volume)}"

    async def unmount_identity(self, identity: Identity) -> None:
        """Nothing to unmount: the one client mount serves all identities and stays."""

    async def mounted_identities(self) -> list[str]:
        return []

    # ------------------------------------------------------------------ volumes

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        """createVolume in the volume's tenant; an existing volume of that name is kept as it is."""
        validate_volume_name(volume)
        tenant = (options or {}).get("tenant", self.tenant)
        configuration = (options or {}).get("configuration", self.configuration)
        try:
            uuid = await asyncio.to_thread(
                self.client.create_volume,
                volume,
                root_user_id=owner.user,
                root_group_id=owner.group,
                configuration=configuration,
                tenant=tenant,
            )
        except QuobyteError as exc:
            if not _is(exc, ENTITY_EXISTS, "ENTITY_EXISTS_ALREADY"):
                raise
            existing = await asyncio.to_thread(self.client.resolve_volume, volume, tenant=tenant)
            log.info("Quobyte volume %s already exists in tenant %s (%s): kept as it is", volume, tenant, existing)
            return
        log.info("created Quobyte volume %s in tenant %s (%s)", volume, tenant, uuid)
        await self._apply_mode(volume, mode)

    async def _apply_mode(self, volume: str, mode: int) -> None:
        """Give the new volume's top folder `mode` through the client (root access, `<mp>/<volume>`)."""
        deadline = time.monotonic() + APPEAR_TIMEOUT
        while True:
            try:
                await asyncio.to_thread(self._chmod_top, volume, mode)
                return
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    log.warning("Quobyte volume %s did not appear in %s: mode not set", volume, self.mountpoint)
                    return
                await asyncio.sleep(0.2)
            except OSError as exc:
                log.warning("cannot set the mode of Quobyte volume %s: %s", volume, exc.strerror)
                return

    def _chmod_top(self, volume: str, mode: int) -> None:
        fd = os.open(self.mountpoint / volume, _O_DIR)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        """Without `purge` the Quobyte volume stays; with it, deleteVolume by its own UUID."""
        validate_volume_name(volume)
        tenant = (options or {}).get("tenant", self.tenant)
        if not purge:
            log.info("volume %s removed without purge: the Quobyte volume stays in tenant %s", volume, tenant)
            return
        uuid = await asyncio.to_thread(self.client.resolve_volume, volume, tenant=tenant)
        if uuid is None:
            log.info("Quobyte volume %s is not in tenant %s: nothing to delete", volume, tenant)
            return
        try:
            await asyncio.to_thread(self.client.delete_volume, uuid)
        except QuobyteError as exc:
            if not _is(exc, ENTITY_NOT_FOUND, "ENTITY_NOT_FOUND"):
                raise
        log.info("deleted Quobyte volume %s (%s) from tenant %s", volume, uuid, tenant)

    async def volume_exists(self, volume: str) -> bool:
        validate_volume_name(volume)
        uuid = await asyncio.to_thread(self.client.resolve_volume, volume, tenant=self.tenant)
        return uuid is not None

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        """Set owner and mode of `<mountpoint>/<volume>` through the client, as root."""
        validate_volume_name(volume)
        return await asyncio.to_thread(self._set_top_sync, volume, owner, mode, only_if_empty)

    def _set_top_sync(self, volume: str, owner: Identity, mode: int, only_if_empty: bool) -> bool:
        try:
            fd = os.open(self.mountpoint / volume, _O_DIR)
        except OSError as exc:
            raise BackendError(f"cannot open Quobyte volume {volume} in {self.mountpoint}: {exc.strerror}") from exc
        try:
            if only_if_empty and os.listdir(fd):
                return False
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
                os.fchown(fd, owner.uid, owner.gid)
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
            return True
        except OSError as exc:
            raise BackendError(f"cannot set the top folder of Quobyte volume {volume}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    async def close(self) -> None:
        """Close the API session; the client mount stays for the containers that use it."""
        await asyncio.to_thread(self.client.close)


async def _run(argv: list[str], *, limit: float) -> tuple[int, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd="/",
        )
    except OSError as exc:
        return -1, f"cannot run {argv[0]}: {exc.strerror}"
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} did not finish within {limit:g} s"
    return (proc.returncode if proc.returncode is not None else -1), out.decode(errors="replace").strip()
