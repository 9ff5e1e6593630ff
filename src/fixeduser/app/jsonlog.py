"""Logs as one JSON object per line, with the `extra=` fields of each call.

Every value is bounded (`fixeduser.clipping.clip`): a request field quoted in a log line can be
megabytes long, and the log must not grow with it.

A `Mount` or `Unmount` logs a line, and the daemon waits for its answer: on the event loop, lines are
formatted and written just after the current step, which has sent the answer by then
(`AfterStepHandler`). Building a record is kept cheap too: no thread or process names are looked up
for lines that never show them (bench/NOTES.md#log-line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import orjson

from fixeduser.clipping import AUDIT_REASON_LIMIT, VALUE_LIMIT, clip

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
MESSAGE_LIMIT = AUDIT_REASON_LIMIT  # the message, arguments included
EXCEPTION_LIMIT = 16 * 1024  # a traceback: its start and its end (the exception itself) are kept


def bounded(value: Any) -> Any:
    """`value` as it may appear in a log line: a string (or any object's text) clipped to
    `VALUE_LIMIT`; a list or dict kept as it is if its JSON text is short enough (`MESSAGE_LIMIT`),
    else that text clipped."""
    if isinstance(value, str):
        return clip(value, VALUE_LIMIT)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):  # orjson writes integers of 64 bits only
        return value if -(1 << 63) <= value < 1 << 64 else clip(_text(value), VALUE_LIMIT)
    if isinstance(value, list | tuple | dict):
        try:
            text = _dumps(value)
        except TypeError:  # e.g. a dict with tuple keys: its text, then
            return clip(_text(value), MESSAGE_LIMIT)
        return value if len(text) <= MESSAGE_LIMIT else clip(text.decode(), MESSAGE_LIMIT)
    return clip(_text(value), VALUE_LIMIT)


def _text(value: Any) -> str:
    """`str(value)`, or what it is when Python will not write it (an integer past its limit of digits)."""
    try:
        return str(value)
    except ValueError:
        return f"<{type(value).__name__} too large to write>"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": clip(record.getMessage(), MESSAGE_LIMIT),
        }
        entry.update({k: bounded(v) for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = clip(self.formatException(record.exc_info), EXCEPTION_LIMIT, tail=EXCEPTION_LIMIT // 2)
        try:
            return _dumps(entry).decode()
        except TypeError:  # something orjson does not write slipped through: the json module writes its text
            return json.dumps(entry, default=_text)

    def _time(self, created: float) -> str:
        """`created` as ISO 8601 in UTC with milliseconds (2026-12-07T00:01:32.123+00:00)."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}+00:00"


class AfterStepHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, called on a running event loop, writes its lines once the loop's current
    step is over (`call_soon`), together; called anywhere else, at once, after the lines still waiting.
    `flush` (also at interpreter exit, `logging.shutdown`) writes whatever waits."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._waiting: list[logging.LogRecord] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        self._waiting.append(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread, or no loop at all
            self._write_waiting()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._write_after_step)

    def _write_after_step(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            self._write_waiting()

    def _write_waiting(self) -> None:
        records, self._waiting = self._waiting, []
        if not records:
            return
        lines = []
        for record in records:
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:
                self.handleError(record)
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            self.handleError(records[-1])

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()
            super().flush()


def configure(level: str) -> None:
    # Nothing in a line shows them, and looking them up is most of what building a record costs.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # the logging module's own switch for not looking up the caller's file and line
    handler = AfterStepHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("casbin").setLevel(logging.WARNING)  # it logs the whole model at info on every load
