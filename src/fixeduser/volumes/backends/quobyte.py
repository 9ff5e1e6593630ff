"""Quobyte backend: volumes made through the Quobyte API, fixed-user access by the Quobyte client.

One Quobyte client mount serves every volume and identity. Mounted with
``mount.quobyte --allow-usermapping-in-volumename <registry>/ <mountpoint>``, the client does
every access below ``<mountpoint>/<user>#<group>@<volume>`` as that user and group, so there is
nothing to mount per identity: `volume_path` names that path and `mount_identity` only makes
sure the client mount is up (repairing a stale one when the plugin started it).

Volumes are created and erased with the Quobyte API, JSON-RPC 2.0 over HTTP POST
(`QuobyteClient`), used as Quobyte's own clients use it: a tenant given by name is resolved to its
UUID (`resolveTenantName`) before any call that takes a tenant, and that UUID is written back into
the volume's options so every later call uses the same tenant; `createVolume` carries
``retry: "INTERACTIVE"``; `configuration_name` is sent only when one is configured (Quobyte 2.x
uses it, 3.x ignores it). Removing a volume keeps it in Quobyte unless purge was chosen; only a
purge calls `eraseVolume` (`deleteVolume` is deprecated and may leave file data), by the UUID the
volume's name resolves to in its tenant, so it can never touch another volume. A volume that
existed before fixeduser's create (adopted) is never chowned or chmodded.

`client` says how the client mount is obtained:

* ``start``: use a Quobyte mount found on `mountpoint`, else run `mount.quobyte` (needs `registry`);
* ``existing``: a Quobyte (FUSE) mount must already be on `mountpoint`; the plugin never mounts;
* ``directory``: `mountpoint` is a plain directory standing in for the client (tests and demos
  only: no user mapping happens unless something else provides the ``user#group@volume`` paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import requests
from requests.auth import HTTPBasicAuth

from fixeduser.linux.mounts import is_stale, mounts_at
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import BackendError, validate_volume_name

log = logging.getLogger(__name__)

ClientMode = Literal["start", "existing", "directory"]

# JSON-RPC 2.0 standard codes (the ones Quobyte's Go client decodes). Entity errors are recognised
# only by the symbol the Quobyte API puts in its error message, e.g.
# "ENTITY_EXISTS_ALREADY/POSIX_ERROR_NONE", as Quobyte's own Docker plugin and CSI driver do: their
# numeric codes are not published, so none is assumed.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
ENTITY_NOT_FOUND, ENTITY_EXISTS = "ENTITY_NOT_FOUND", "ENTITY_EXISTS_ALREADY"
ERROR_HINTS = {
    PARSE_ERROR: "the API could not parse the request (a proxy in between?)",
    INVALID_REQUEST: "the API rejected the request format (an incompatible Quobyte release?)",
    METHOD_NOT_FOUND: "the API does not know this method (an incompatible Quobyte release?)",
    INVALID_PARAMS: "the API rejected the parameters (check tenant and configuration names)",
    INTERNAL_ERROR: "the Quobyte API failed internally; see its logs",
}
RETRY_POLICY = "INTERACTIVE"  # what Quobyte's clients send with createVolume: fail rather than hang
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Filesystem types of a Quobyte client mount in /proc/self/mountinfo.
QUOBYTE_FSTYPES = frozenset({"fuse.quobyte", "quobyte"})
ADOPTED_OPTION = "adopted"  # written into the options of a volume fixeduser did not create
DEFAULT_TIMEOUT = 10.0
MOUNT_TIMEOUT = 60.0
APPEAR_TIMEOUT = 10.0  # a new volume may take a moment to show up in the client mount
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


HEALTH_PROBE_NAME = ".fixeduser-health-probe"  # not a valid volume name: never a real volume


class QuobyteError(BackendError):
    """A Quobyte API failure; `code` is the JSON-RPC error code (None for HTTP/transport errors).

    `after_retry` is set when an earlier attempt of the same call failed in transit: that attempt
    may have been carried out although its answer was lost."""

    def __init__(self, message: str, *, code: int | None = None, symbol_text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.symbol_text = symbol_text
        self.after_retry = False


def _is(error: QuobyteError, symbol: str) -> bool:
    """Whether the API's own error message carries `symbol` (ENTITY_NOT_FOUND, ...)."""
    return symbol in error.symbol_text


def is_uuid(value: str) -> bool:
    return bool(UUID_RE.fullmatch(value))


class QuobyteClient:
    """Blocking JSON-RPC client for the Quobyte API (call it from a worker thread).

    One `requests.Session` (one connection pool) is reused under a lock. Like Quobyte's Go client,
    it sends basic auth until the API hands out a session cookie, then the cookie alone; a 401 on
    the cookie drops it and the call is sent once more with basic auth. Transient failures
    (connection errors, timeouts, HTTP 5xx) are retried `retries` times with exponential backoff;
    everything else fails at once with a message naming the cause. Its blocking calls belong on the
    backend's own executor, never the event loop's shared default one.
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
        self._auth = HTTPBasicAuth(user, password)
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
                except QuobyteError as exc:
                    exc.after_retry = attempt > 0
                    raise
                except _Transient as exc:
                    if attempt == self.retries:
                        raise QuobyteError(
                            f"Quobyte API {self.url} unavailable for {method} after {attempt + 1} attempts: {exc}"
                        ) from None
                    delay = self.backoff * 2**attempt
                    log.warning("quobyte API call failed, retrying", extra={"method": method, "error": str(exc)})
                    time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, body: dict[str, Any]) -> requests.Response:
        with_cookie = bool(self._session.cookies)
        try:
            response = self._session.post(
                self.url, json=body, timeout=self.timeout, auth=None if with_cookie else self._auth
            )
            if response.status_code == 401 and with_cookie:
                log.info("Quobyte API session cookie refused: dropping it, sending basic auth again")
                self._session.cookies.clear()
                response = self._session.post(self.url, json=body, timeout=self.timeout, auth=self._auth)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        return response

    def _post(self, method: str, body: dict[str, Any]) -> Any:
        response = self._send(body)
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
                symbol_text=str(message),
            )
        return answer.get("result")

    def create_volume(
        self, name: str, *, root_user_id: str, root_group_id: str, configuration: str | None, tenant_uuid: str
    ) -> str:
        """createVolume; its UUID.

        ENTITY_EXISTS_ALREADY after a retried attempt means the lost first attempt made it: that is
        this call's volume. Any other ENTITY_EXISTS_ALREADY raises."""
        params: dict[str, Any] = {
            "name": name,
            "root_user_id": root_user_id,
            "root_group_id": root_group_id,
            "tenant_id": tenant_uuid,
            "retry": RETRY_POLICY,
        }
        if configuration:
            params["configuration_name"] = configuration
        try:
            result = self.call("createVolume", params)
        except QuobyteError as exc:
            if not (exc.after_retry and _is(exc, ENTITY_EXISTS)):
                raise
            uuid = self.resolve_volume(name, tenant_uuid=tenant_uuid)
            if uuid is None:
                raise
            log.info("Quobyte volume %s was made by an attempt whose answer was lost", name)
            return uuid
        return str((result or {}).get("volume_uuid", ""))

    def resolve_tenant(self, tenant: str) -> str:
        """The UUID of `tenant` (a UUID is returned as it is); a tenant that does not exist raises,
        naming it."""
        if is_uuid(tenant):
            return tenant
        try:
            result = self.call("resolveTenantName", {"tenant_name": tenant})
        except QuobyteError as exc:
            if _is(exc, ENTITY_NOT_FOUND):
                raise QuobyteError(
                    f"Quobyte tenant {tenant!r} does not exist (check --quobyte-tenant or -o tenant=): {exc}"
                ) from None
            raise
        uuid = (result or {}).get("tenant_id")
        if not uuid:
            raise QuobyteError(f"Quobyte API resolveTenantName gave no tenant_id for tenant {tenant!r}")
        return str(uuid)

    def resolve_volume(self, name: str, *, tenant_uuid: str) -> str | None:
        """The UUID of volume `name` in the tenant `tenant_uuid`, or None if there is none."""
        try:
            result = self.call("resolveVolumeName", {"volume_name": name, "tenant_domain": tenant_uuid})
        except QuobyteError as exc:
            if _is(exc, ENTITY_NOT_FOUND):
                return None
            raise
        uuid = (result or {}).get("volume_uuid")
        return str(uuid) if uuid else None

    def erase_volume(self, uuid: str) -> None:
        """eraseVolume: the volume and its file data (deleteVolume is deprecated and may leave data)."""
        self.call("eraseVolume", {"volume_uuid": uuid})

    def volume_list(self) -> list[dict[str, Any]]:
        result = self.call("getVolumeList", {})
        volumes = (result or {}).get("volume", [])
        return [v for v in volumes if isinstance(v, dict)]

    def close(self) -> None:
        self._session.close()


_T = TypeVar("_T")


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
        configuration: str | None = None,
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
        # Its own small executor: the API client holds a lock and sleeps between retries, and the
        # client mount can hang; neither may starve the loop's shared default executor.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quobyte")
        self._adopted: set[str] = set()  # volumes that existed before our create: never chowned

    async def _io(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _tenant_uuid(self, options: Mapping[str, str] | None) -> str:
        """The UUID of the volume's tenant (its `tenant` option, else --quobyte-tenant)."""
        return await self._io(self.client.resolve_tenant, (options or {}).get("tenant") or self.tenant)

    # ------------------------------------------------------------------ the client mount

    async def check(self) -> None:
        """Make sure the client mount is usable (mounting or repairing it in `start` mode)."""
        async with self._client_lock:
            await self._ensure_client()

    async def check_service(self) -> None:
        """One cheap API call (resolve a name no volume can have): reachable, and our credentials accepted."""
        try:
            tenant_uuid = await self._tenant_uuid(None)
            await self._io(self.client.resolve_volume, HEALTH_PROBE_NAME, tenant_uuid=tenant_uuid)
        except BackendError as exc:
            raise BackendError(f"the Quobyte API is unusable: {exc}") from None

    async def _ensure_client(self) -> None:
        mp = self.mountpoint
        if self.client_mode == "directory":
            if not await self._io(mp.is_dir):
                raise BackendError(f"{mp} (the stand-in for the Quobyte client mount) is not a directory")
            return
        mounted = await self._io(mounts_at, mp)
        if mounted:
            top = mounted[-1]  # the last mount on a path is the one seen there
            if top.fstype not in QUOBYTE_FSTYPES:
                raise BackendError(
                    f"{mp} has a {top.fstype} mount of {top.source!r}, not a Quobyte client mount "
                    f"(fuse.quobyte): unmount it, or choose another --quobyte-mountpoint"
                )
        stale = bool(mounted) and await self._io(is_stale, mp)
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
        await self._io(mp.mkdir, parents=True, exist_ok=True)
        argv = [self.mount_command, "--allow-usermapping-in-volumename", f"{self.registry}/", str(mp)]
        rc, err = await _run(argv, limit=MOUNT_TIMEOUT)
        now = await self._io(mounts_at, mp) if rc == 0 else []
        if rc != 0 or not now:
            raise BackendError(f"mounting the Quobyte client on {mp} failed (exit status {rc}): {err or 'no output'}")
        if now[-1].fstype not in QUOBYTE_FSTYPES:
            raise BackendError(f"{self.mount_command} put a {now[-1].fstype} mount on {mp}, not a Quobyte client mount")
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
        """createVolume in the volume's tenant; an existing volume of that name is adopted as it is.

        The tenant's UUID is written into `options` (when the driver hands a mutable mapping, which
        it then stores) so later calls use this tenant whatever --quobyte-tenant becomes; an adopted
        volume is marked there with ``adopted=true``."""
        validate_volume_name(volume)
        tenant = (options or {}).get("tenant") or self.tenant
        configuration = (options or {}).get("configuration") or self.configuration
        tenant_uuid = await self._io(self.client.resolve_tenant, tenant)
        if isinstance(options, MutableMapping):
            options["tenant"] = tenant_uuid
        await self._refuse_ambiguous_name(volume, tenant_uuid)
        try:
            uuid = await self._io(
                self.client.create_volume,
                volume,
                root_user_id=owner.user,
                root_group_id=owner.group,
                configuration=configuration,
                tenant_uuid=tenant_uuid,
            )
        except QuobyteError as exc:
            if not _is(exc, ENTITY_EXISTS):
                raise
            existing = await self._io(self.client.resolve_volume, volume, tenant_uuid=tenant_uuid)
            log.info("Quobyte volume %s already exists in tenant %s (%s): adopted as it is", volume, tenant, existing)
            self._adopted.add(volume)
            if isinstance(options, MutableMapping):
                options[ADOPTED_OPTION] = "true"
            return
        self._adopted.discard(volume)
        log.info("created Quobyte volume %s in tenant %s (%s)", volume, tenant, uuid)
        await self._apply_mode(volume, mode)

    async def _refuse_ambiguous_name(self, volume: str, tenant_uuid: str) -> None:
        """The client path `<user>#<group>@<volume>` names a volume by name alone: refuse a name that a
        volume of another tenant has, so that path can never mean another tenant's volume."""
        others = sorted(
            str(v.get("tenant_domain"))
            for v in await self._io(self.client.volume_list)
            if v.get("name") == volume and v.get("tenant_domain") != tenant_uuid
        )
        if others:
            raise BackendError(
                f"a Quobyte volume named {volume} exists in tenant {', '.join(others)} already: the client "
                f"path {volume} would be ambiguous between tenants; choose another volume name"
            )

    async def _apply_mode(self, volume: str, mode: int) -> None:
        """Give the new volume's top folder `mode` through the client (root access, `<mp>/<volume>`)."""
        deadline = time.monotonic() + APPEAR_TIMEOUT
        while True:
            try:
                await self._io(self._chmod_top, volume, mode)
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
        """Without `purge` the Quobyte volume stays; with it, eraseVolume by its own UUID."""
        validate_volume_name(volume)
        self._adopted.discard(volume)
        tenant = (options or {}).get("tenant") or self.tenant
        if not purge:
            log.info("volume %s removed without purge: the Quobyte volume stays in tenant %s", volume, tenant)
            return
        tenant_uuid = await self._io(self.client.resolve_tenant, tenant)  # a wrong tenant raises, naming it
        uuid = await self._io(self.client.resolve_volume, volume, tenant_uuid=tenant_uuid)
        if uuid is None:
            log.info("Quobyte volume %s is not in tenant %s: nothing to erase", volume, tenant)
            return
        try:
            await self._io(self.client.erase_volume, uuid)
        except QuobyteError as exc:
            if not _is(exc, ENTITY_NOT_FOUND):
                raise
        log.info("erased Quobyte volume %s (%s) from tenant %s", volume, uuid, tenant)

    async def volume_exists(self, volume: str) -> bool:
        validate_volume_name(volume)
        tenant_uuid = await self._tenant_uuid(None)
        uuid = await self._io(self.client.resolve_volume, volume, tenant_uuid=tenant_uuid)
        return uuid is not None

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        """Set owner and mode of `<mountpoint>/<volume>` through the client, as root.

        Never for an adopted volume (one fixeduser did not create): returns False, untouched."""
        validate_volume_name(volume)
        if volume in self._adopted:
            log.info("Quobyte volume %s was adopted, not created by fixeduser: its top folder is left alone", volume)
            return False
        return await self._io(self._set_top_sync, volume, owner, mode, only_if_empty)

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
        await self._io(self.client.close)
        self._executor.shutdown(wait=False)


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
