"""A tiny client for the Docker daemon the plugin serves, used only for read-only look-ups.

Its requests cross our own authz plugin too; they carry a per-process secret header so the
plugin can let exactly these read-only calls through whatever the policy says of @local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import httptools
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from fixeduser.docker_api.requests import CONTAINER_ID
from fixeduser.docker_api.unix_client import UnixHttpClient
from fixeduser.linux.unixhttp import accepts_connections

log = logging.getLogger(__name__)

SELF_HEADER = "X-Fixeduser-Self"
SELF_ACTIONS = frozenset(
    {"container.list", "container.inspect", "volume.inspect", "network.inspect", "task.inspect", "system.events"}
)
HOST_NETWORK = "host"


class ListedMount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field("", alias="Type")
    name: str = Field("", alias="Name")
    driver: str = Field("", alias="Driver")


class ListedContainer(BaseModel):
    """The fields of a `GET /containers/json` entry fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="Id")
    names: tuple[str, ...] = Field((), alias="Names")  # each with a leading "/"
    state: str = Field("", alias="State")
    mounts: tuple[ListedMount, ...] = Field((), alias="Mounts")

    @field_validator("names", "mounts", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    def mount_points_of(self, volume: str) -> int:
        return sum(1 for mount in self.mounts if mount.type == "volume" and mount.name == volume)


_CONTAINER_LIST = TypeAdapter(list[ListedContainer])


class InspectedNetwork(BaseModel):
    """The fields of a `GET /networks/{id}` answer fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    driver: str = Field("", alias="Driver")

    @property
    def is_host(self) -> bool:
        """The host's own network namespace: the predefined `host` network (local or swarm-scoped)."""
        return HOST_NETWORK in (self.name, self.driver)


class InspectedTask(BaseModel):
    """The fields of a `GET /tasks/{id}` answer fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(alias="ID")
    service_id: str = Field(alias="ServiceID")


class DaemonEvent(BaseModel):
    """The fields of a `GET /events` line fixeduser reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field("", alias="Type")
    action: str = Field("", alias="Action")


EVENT_LIMIT = 1 << 20


class DaemonError(RuntimeError):
    """The daemon could not answer a look-up the plugin needed."""


class DaemonUnavailable(DaemonError):
    """The daemon's API does not answer at all now (it is starting, restoring or stopping)."""


def is_full_id(reference: str) -> bool:
    """A container ID as the daemon makes them: 64 lowercase hex digits."""
    # The create answers' pattern: a generator over the characters took 2 µs per ID, 1.2 % of the CPU at 64 clients.
    return CONTAINER_ID.fullmatch(reference) is not None


class DaemonLookups(Protocol):
    """The read-only look-ups the authz plugin makes (`DaemonClient`; fakes in tests and `explain`).

    Requests carrying `token` in the SELF_HEADER are fixeduser's own."""

    token: str

    async def inspect_container(self, reference: str) -> dict[str, Any] | None: ...

    async def inspect_new_container(self, container_id: str) -> dict[str, Any] | None:
        """`inspect_container` of a container just created, asked ahead of its start (counted apart)."""
        ...

    async def inspect_volume(self, name: str) -> dict[str, Any] | None: ...

    async def inspect_network(self, reference: str) -> InspectedNetwork | None: ...

    async def inspect_task(self, reference: str) -> InspectedTask | None: ...


class DaemonClient:
    def __init__(self, host: str, *, timeout: float = 10.0) -> None:
        if not host.startswith("unix://"):
            raise ValueError(f"--docker-host must be a unix:// socket, got {host!r}")
        self._socket = host.removeprefix("unix://")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.token = secrets.token_hex(16)
        self._lean: UnixHttpClient | None = None
        self._in_flight: dict[str, asyncio.Future[Any]] = {}
        self.spent: dict[str, tuple[int, float]] = {}  # look-ups by what they ask: (how many, seconds in all)

    async def _get(self, path: str, what: str) -> Any:
        """One look-up; concurrent identical look-ups share one request (a burst of creates naming the same
        unknown volume costs the daemon one answer, not one each). Callers must not change the result."""
        shared = self._in_flight.get(path)
        if shared is None:
            shared = asyncio.ensure_future(self._get_now(path, what))
            self._in_flight[path] = shared
            shared.add_done_callback(lambda done: self._settled(path, done))
        return await asyncio.shield(shared)

    def _settled(self, path: str, done: asyncio.Future[Any]) -> None:
        self._in_flight.pop(path, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone (a cancelled request)

    async def _get_now(self, path: str, what: str) -> Any:
        started = time.perf_counter()
        try:
            return await self._get_once(path)
        finally:
            count, seconds = self.spent.get(what, (0, 0.0))
            self.spent[what] = (count + 1, seconds + time.perf_counter() - started)

    async def _get_once(self, path: str) -> Any:
        async with self._request("GET", path) as (status, body):
            if status == 404:
                return None
            if status != 200:
                raise DaemonError(f"daemon answered {status} to GET {path}: {body[:200]!r}")
            return json.loads(body)

    @contextlib.asynccontextmanager
    async def _request(self, method: str, path: str) -> Any:
        """(status, body) of one call; every failure a DaemonError that says what happened."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout.total):
                answer = await self._http().request(method, path)
        except TimeoutError:
            raise DaemonUnavailable(
                f"the Docker daemon at {self._socket} did not answer {method} {path.partition('?')[0]} within "
                f"{time.monotonic() - started:.1f} s"
            ) from None
        except (OSError, httptools.HttpParserError) as exc:
            raise DaemonUnavailable(
                f"cannot reach the Docker daemon at {self._socket}: {type(exc).__name__}: {exc}"
            ) from None
        yield answer

    def _http(self) -> UnixHttpClient:
        if self._lean is None:
            self._lean = UnixHttpClient(self._socket, {SELF_HEADER: self.token})
        return self._lean

    async def start_container(self, container_id: str) -> None:
        """Start a container (fixeduser's own request: its authz lets it through only for recoveries)."""
        async with self._request("POST", f"/containers/{quote(container_id, safe='')}/start") as (status, body):
            if status not in (204, 304):
                raise DaemonError(f"daemon answered {status} to the start of {container_id[:12]}: {body[:300]!r}")

    async def containers_using(self, volume: str, *, states: tuple[str, ...] = ()) -> list[ListedContainer]:
        """Every container with a mount point of `volume` (only those in `states`, if given)."""
        wanted: dict[str, list[str]] = {"volume": [volume]}
        if states:
            wanted["status"] = list(states)
        filters = quote(json.dumps(wanted))
        what = f"containers of a volume ({', '.join(states)})" if states else "containers of a volume"
        return _listed(await self._get(f"/containers/json?all=1&filters={filters}", what))

    async def all_containers(self) -> list[ListedContainer]:
        """Every container the daemon has, running or not, with its mounts."""
        return _listed(await self._get("/containers/json?all=1", "all containers"))

    async def container_ids(self) -> set[str]:
        """IDs of every container the daemon has, running or not (only the IDs are read: the ledger pruner asks
        after each removal, and a host may have thousands)."""
        listing = await self._get("/containers/json?all=1", "all containers")
        return {item["Id"] for item in listing or []}

    async def inspect_container(self, reference: str) -> dict[str, Any] | None:
        result = await self._get(f"/containers/{quote(reference, safe='')}/json", "container")
        return result if isinstance(result, dict) else None

    async def inspect_new_container(self, container_id: str) -> dict[str, Any] | None:
        result = await self._get(
            f"/containers/{quote(container_id, safe='')}/json", "new container, ahead of its start"
        )
        return result if isinstance(result, dict) else None

    async def inspect_volume(self, name: str) -> dict[str, Any] | None:
        """The daemon's view of a volume (driver, options), or None if it does not exist."""
        result = await self._get(f"/volumes/{quote(name, safe='')}", "volume")
        return result if isinstance(result, dict) else None

    async def inspect_network(self, reference: str) -> InspectedNetwork | None:
        """The network the daemon resolves `reference` to (ID, name or ID prefix), or None if none."""
        answer = await self._get(f"/networks/{quote(reference, safe='')}", "network")
        return _validated(InspectedNetwork, answer, "network")

    async def inspect_task(self, reference: str) -> InspectedTask | None:
        """The swarm task the daemon resolves `reference` to, or None if none (a non-manager answers 503)."""
        return _validated(InspectedTask, await self._get(f"/tasks/{quote(reference, safe='')}", "task"), "task")

    async def ping(self, path: str) -> int:
        """The status of a `GET` of `path` (a `/_ping` with a query of the caller's: what the daemon's answer says
        does not matter to it, only that the daemon handled the request)."""
        async with self._request("GET", path) as (status, _):
            return int(status)

    def listening(self) -> bool:
        """Whether something accepts connections on the daemon's socket now (no request is sent)."""
        return accepts_connections(self._socket)

    @contextlib.asynccontextmanager
    async def event_stream(self, on_event: Callable[[bytes], None]) -> Any:
        """A `GET /events` stream of daemon-level events (rare), open for as long as the daemon serves; each
        event's JSON line goes to `on_event`.

        Yields the HTTP status; the stream's end (EOF or error) is a DaemonUnavailable."""
        filters = quote(json.dumps({"type": ["daemon"]}))
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self._socket),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total),
            headers={SELF_HEADER: self.token},
        ) as session:
            try:
                async with session.get(f"http://docker/events?filters={filters}") as response:
                    yield response.status
                    pending = b""
                    while chunk := await response.content.readany():
                        *lines, pending = (pending + chunk).split(b"\n")
                        for line in lines:
                            on_event(line)
                        if len(pending) > EVENT_LIMIT:  # no event is this long; do not hold a runaway one
                            pending = b""
            except (aiohttp.ClientError, OSError) as exc:
                raise DaemonUnavailable(f"the Docker daemon's event stream at {self._socket} ended: {exc}") from None

    async def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
            self._lean = None


class DaemonWatch:
    """Whether the daemon's API answers now, known from a long-lived `GET /events` stream.

    The stream ends the moment the daemon stops. A restarted daemon accepts connections on its
    socket long before its API answers (it first restores its containers, mounting their volumes),
    so the stream opens again only once it serves: until then a look-up would wait for its timeout,
    and fixeduser refuses at once instead of holding the daemon's restore up.
    """

    def __init__(self, client: DaemonClient, *, grace: float = 1.0, retry: float = 0.2) -> None:
        self._client = client
        self._grace = grace  # how long after the stream was lost a look-up may still wait for it
        self._retry = retry
        self._open = asyncio.Event()
        self._down_since = time.monotonic()
        self._listeners: list[Callable[[], Coroutine[Any, Any, object]]] = []
        self._reload_listeners: list[Callable[[], Coroutine[Any, Any, object]]] = []
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def serving(self) -> bool:
        return self._open.is_set()

    def down_for(self) -> float:
        return 0.0 if self.serving else time.monotonic() - self._down_since

    def on_serving(self, listener: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Run `listener` each time the daemon's API answers again (and at the first time)."""
        self._listeners.append(listener)

    def on_reload(self, listener: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Run `listener` each time the daemon says it reloaded its configuration (SIGHUP)."""
        self._reload_listeners.append(listener)

    async def wait_serving(self) -> bool:
        """True once the API answers; False at once if it has not answered for longer than the grace."""
        if self._open.is_set():
            return True
        remaining = self._down_since + self._grace - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), remaining)
        return self._open.is_set()

    async def run(self) -> None:
        """Keep the stream open (a background task): reconnect whenever it ends."""
        while True:
            # While the daemon is stopped, a connect says so in a few syscalls; a stream attempt builds and
            # tears down an HTTP client session each time (bench/NOTES.md#daemon-watch).
            if self._client.listening():
                await self._follow_stream()
            self._stopped_answering()
            await asyncio.sleep(self._retry)

    async def _follow_stream(self) -> None:
        try:
            async with self._client.event_stream(self._on_event) as status:
                self._serving()
                if status != 200:
                    log.warning("the daemon refused fixeduser's event stream", extra={"status": status})
                    await asyncio.sleep(30)  # it answers, so it serves; ask again later
        except DaemonError as exc:
            log.debug("daemon event stream ended", extra={"error": str(exc)})

    def _stopped_answering(self) -> None:
        if self._open.is_set():
            self._open.clear()
            self._down_since = time.monotonic()
            log.info("the Docker daemon's API stopped answering")

    def _serving(self) -> None:
        if self._open.is_set():
            return
        down_for = self.down_for()  # before the event is set, after which it reads 0
        self._open.set()
        log.info("the Docker daemon's API answers", extra={"after_seconds": round(down_for, 3)})
        self._run_all(self._listeners)

    def _on_event(self, line: bytes) -> None:
        try:
            event = DaemonEvent.model_validate_json(line)
        except ValidationError:
            return  # not an event fixeduser reads (an empty keep-alive line)
        if event.type == "daemon" and event.action == "reload":
            self._run_all(self._reload_listeners)

    def _run_all(self, listeners: list[Callable[[], Coroutine[Any, Any, object]]]) -> None:
        for listener in listeners:
            task = asyncio.create_task(listener())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


_Model = TypeVar("_Model", bound=BaseModel)


def _listed(listing: Any) -> list[ListedContainer]:
    try:
        return _CONTAINER_LIST.validate_python(listing or [])
    except ValidationError as exc:
        raise DaemonError(f"unexpected container list from the daemon: {exc}") from exc


def _validated(model: type[_Model], answer: Any, what: str) -> _Model | None:
    if answer is None:
        return None
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        raise DaemonError(f"unexpected {what} description from the daemon: {exc}") from exc
