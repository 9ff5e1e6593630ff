"""Logs as one JSON object per line, with the `extra=` fields of each call.

Every value is bounded (`fixeduser.clipping.clip`): a request field quoted in a log line can be
megabytes long, and the log must not grow with it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

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
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | dict):
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):  # e.g. a dict with tuple keys: its text, then
            return clip(str(value), MESSAGE_LIMIT)
        return value if len(text) <= MESSAGE_LIMIT else clip(text, MESSAGE_LIMIT)
    return clip(str(value), VALUE_LIMIT)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": clip(record.getMessage(), MESSAGE_LIMIT),
        }
        entry.update({k: bounded(v) for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = clip(self.formatException(record.exc_info), EXCEPTION_LIMIT, tail=EXCEPTION_LIMIT // 2)
        return json.dumps(entry, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("casbin").setLevel(logging.WARNING)  # it logs the whole model at info on every load
