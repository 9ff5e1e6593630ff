"""HTTP/1.1 on a plugin socket: httptools parses, answers go out in request order, one write each.

The daemon's plugin client keeps one connection per plugin and sends one small JSON POST at a time,
twice for every Docker API call. aiohttp's server answered them before, and its request machinery
(the request and response objects, header handling, timers) was about half of what an authz
plugin adds to `docker ps` (bench/NOTES.md#plugin-transport; bench part 3 repeats the comparison).

A call the responder `answers_at_once` runs right where its bytes arrive, and becomes a task only if
it has to wait: a task and a turn of the loop per call were a third of what the transport adds to a
`docker ps` (bench/NOTES.md#answers-at-once). Until it first waits such a handler has no task of its
own, so it must not need one there (`asyncio.timeout` does; work started with `ensure_future` may).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024  # request line and headers; the daemon sends a few hundred bytes
MAX_QUEUED = 8  # calls read ahead of their answers before reading stops (a pipelining client)
Reply = tuple[HTTPStatus, bytes]
_STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, status.phrase.encode()) for status in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed request. `refusal` is set when the request itself was unacceptable."""

    method: str
    path: str
    body: bytes
    keep_alive: bool
    refusal: tuple[HTTPStatus, str] | None = None


class Responder(Protocol):
    """What a plugin socket answers with: its calls' replies and the body of a refused request."""

    async def answer(self, call: Call) -> Reply: ...

    def answers_at_once(self, call: Call) -> bool:
        """Whether `answer(call)` may start inside the connection's callback, with no task of its own."""
        ...

    def refusal(self, status: HTTPStatus, reason: str) -> Reply: ...


class PluginConnection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers them one after another."""

    # the request being parsed
    _url: bytearray
    _body: bytearray
    _head_size: int
    _expects_continue: bool
    _refusal: tuple[HTTPStatus, str] | None

    def __init__(self, responder: Responder, content_type: str, max_body: int, live: set[PluginConnection]) -> None:
        self._responder = responder
        self._header_lines = f"Content-Type: {content_type}\r\nContent-Length: ".encode()
        self._max_body = max_body
        self._live = live
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._calls: deque[Call] = deque()
        self.worker: asyncio.Task[None] | None = None
        self._reading = True
        self._closing = False
        self._start_message()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A call being answered runs to its end (a mount must not stop halfway); its answer is dropped.
        self._live.discard(self)
        self._transport = None
        self._calls.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(HTTPStatus.BAD_REQUEST, "plugin sockets do not upgrade connections")
        except httptools.HttpParserError as exc:
            self._refuse(HTTPStatus.BAD_REQUEST, f"bad HTTP request: {exc}")
        if self.worker is None and self._calls:
            self._answer_queued()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._start_message()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expects_continue = True

    def on_headers_complete(self) -> None:
        if self._head_size > MAX_HEAD:
            self._refusal = (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"request head over {MAX_HEAD} bytes")
        elif self._expects_continue and self.worker is None and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self._refusal is not None:
            return
        if len(self._body) + len(chunk) > self._max_body:
            self._refusal = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {self._max_body} bytes")
            self._body = bytearray()
            return
        self._body += chunk

    def on_message_complete(self) -> None:
        call = Call(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=_path_of(bytes(self._url)),
            body=bytes(self._body),
            keep_alive=self._parser.should_keep_alive(),
            refusal=self._refusal,
        )
        self._queue(call)  # the next message's state is reset by its on_message_begin

    # ------------------------------------------------------------------ answering

    def _start_message(self) -> None:
        self._url = bytearray()
        self._body = bytearray()
        self._head_size = 0
        self._expects_continue = False
        self._refusal = None

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        """A request that cannot be parsed ends the connection once earlier calls are answered."""
        self._queue(Call(method="", path="", body=b"", keep_alive=False, refusal=(status, reason)))

    def _queue(self, call: Call) -> None:
        if call.refusal is not None or not call.keep_alive:
            self._closing = True  # nothing after this request is read
        self._calls.append(call)
        if len(self._calls) >= MAX_QUEUED or self._closing:
            self._pause_reading()

    def _answer_queued(self) -> None:
        """Answers queued calls here, in order, while each finishes without waiting; the first that waits
        goes on in a task, which answers the rest after it."""
        loop = asyncio.get_running_loop()
        while self._calls:
            call = self._calls[0]
            if not self._responder.answers_at_once(call):
                self.worker = loop.create_task(self._answer_calls())
                return
            self._calls.popleft()
            reply = self._reply_to(call)
            try:
                awaited = reply.send(None)
            except StopIteration as done:
                if not self._deliver(call, done.value):
                    return
            else:
                self.worker = loop.create_task(self._answer_calls((call, _resumed(reply, awaited))))
                return

    async def _answer_calls(self, started: tuple[Call, Awaitable[Reply]] | None = None) -> None:
        try:
            if started is not None and not self._deliver(started[0], await started[1]):
                return
            while self._calls:
                call = self._calls.popleft()
                if not self._deliver(call, await self._reply_to(call)):
                    return
        finally:
            self.worker = None

    def _deliver(self, call: Call, reply: Reply) -> bool:
        """Sends the reply; False once the connection is to end with it."""
        self._send(*reply, call)
        if not call.keep_alive or call.refusal is not None:
            self.close()
            return False
        if not self._reading and len(self._calls) < MAX_QUEUED:
            self._resume_reading()
        return True

    async def _reply_to(self, call: Call) -> Reply:
        if call.refusal is not None:
            return self._responder.refusal(*call.refusal)
        try:
            return await self._responder.answer(call)
        except Exception:  # one broken call must not end the daemon's connection
            log.exception("plugin call failed", extra={"path": call.path})
            return self._responder.refusal(HTTPStatus.INTERNAL_SERVER_ERROR, f"{call.path} failed; see the plugin log")

    def _send(self, status: HTTPStatus, body: bytes, call: Call) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        closing = b"Connection: close\r\n" if not call.keep_alive or call.refusal is not None else b""
        head = b"%s%s%s%d\r\n\r\n" % (_STATUS_LINES[status], closing, self._header_lines, len(body))
        transport.write(head if call.method == "HEAD" else head + body)

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None:
            self._transport.pause_reading()
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._reading = True


def _path_of(url: bytes) -> str:
    path = url.partition(b"?")[0].decode("utf-8", "replace")
    return unquote(path) if "%" in path else path


@types.coroutine
def _resumed(reply: Coroutine[Any, Any, Reply], awaited: Any) -> Generator[Any, Any, Reply]:
    """The rest of a call started in a callback, for a task to drive: the task waits on what the call
    was waiting for, and hands results, exceptions and cancellation on to it."""
    while True:
        try:
            sent = yield awaited
        except BaseException as exc:  # a cancellation too: the call decides what it means
            try:
                awaited = reply.throw(exc)
            except StopIteration as done:
                return cast(Reply, done.value)
        else:
            try:
                awaited = reply.send(sent)
            except StopIteration as done:
                return cast(Reply, done.value)
