"""HTTP/1.1 requests to the Docker daemon's unix socket on kept-alive connections; httptools parses the answers.

aiohttp's client cost the plugin about 180 µs of CPU per look-up (bench/NOTES.md#daemon-client), and the
plugin asks the daemon at every container start and for every name it cannot check otherwise. A request
here is a few writes and one parse. Failures are OSError (the socket), ConnectionError (closed before the
answer) or httptools.HttpParserError (not HTTP); the caller times requests out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

import httptools

MAX_IDLE = 64  # kept-alive connections waiting: as many as a busy host asks at once (bench/NOTES.md#daemon-client)
MAX_CONNECTIONS = 100  # at most this many requests at once, like aiohttp's connector
MAX_REDIRECTS = 10  # like aiohttp: the daemon's router redirects an uncleaned path (`/containers/%2Fname/json`)
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class TooManyRedirects(ConnectionError):
    """A GET redirected more than MAX_REDIRECTS times."""


class _Exchange(asyncio.Protocol):
    """One connection: a request written, its answer parsed; then the next one, while the daemon keeps it."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body = bytearray()
        self.location: str | None = None  # of the last answer
        self.reusable = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"the daemon closed the connection before answering ({exc or 'end of stream'})"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location":
            self.location = value.decode("latin-1")

    def on_body(self, chunk: bytes) -> None:
        self._body += chunk

    def on_message_complete(self) -> None:
        self.reusable = self._parser.should_keep_alive()
        answer, self._answer = self._answer, None
        body, self._body = bytes(self._body), bytearray()
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), body))

    def _fail(self, exc: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._transport is None or self.closed:
            raise ConnectionError("the connection to the daemon is closed")
        self.reusable = False
        self.location = None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class UnixHttpClient:
    """Requests without a body to one unix socket, each with `headers`."""

    def __init__(self, socket_path: str, headers: Mapping[str, str]) -> None:
        self._socket_path = socket_path
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._idle: list[_Exchange] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        """(status, body) of one request; a GET follows redirects within the socket."""
        for _ in range(MAX_REDIRECTS + 1):
            status, body, location = await self._one(method, path)
            if method != "GET" or status not in REDIRECTS or location is None:
                return status, body
            path = _local_path(location)
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects, the last to {path}")

    async def _one(self, method: str, path: str) -> tuple[int, bytes, str | None]:
        """One exchange; a GET on a kept-alive connection the daemon closed meanwhile is sent again once
        on a new one (a POST is never sent twice)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n{self._headers}Content-Length: 0\r\n\r\n".encode()
        async with self._slots:
            connection = self._reused()
            if connection is not None:
                try:
                    return self._returned(connection, await connection.exchange(head))
                except ConnectionError:
                    connection.close()
                    if method != "GET":
                        raise
                except BaseException:
                    connection.close()
                    raise
            connection = await self._connect()
            try:
                return self._returned(connection, await connection.exchange(head))
            except BaseException:
                connection.close()
                raise

    def _reused(self) -> _Exchange | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self) -> _Exchange:
        _, connection = await asyncio.get_running_loop().create_unix_connection(_Exchange, self._socket_path)
        return connection

    def _returned(self, connection: _Exchange, answer: tuple[int, bytes]) -> tuple[int, bytes, str | None]:
        location = connection.location
        if connection.reusable and not connection.closed and len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()
        return answer[0], answer[1], location

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _local_path(location: str) -> str:
    """The path (and query) a redirect names; a full URL's host is the same daemon socket either way."""
    if location.startswith("/"):
        return location
    _, _, rest = location.partition("://")
    return "/" + rest.partition("/")[2]
