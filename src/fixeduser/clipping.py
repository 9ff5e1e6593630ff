"""Bounded quoting: every value a log line, audit record or denial message quotes goes through `clip`.

A request can carry megabytes in one field (a mount ID, a URI, a name); quoted whole, forty such
requests grew the plugin log by 671 MB. `clip` keeps the start (and optionally the end) of a value
and says how much was cut; the result is never longer than `limit`, so clipping twice changes nothing.
"""

from __future__ import annotations

__all__ = ["AUDIT_REASON_LIMIT", "DENIAL_LIMIT", "VALUE_LIMIT", "clip"]

VALUE_LIMIT = 1024  # one quoted value: a name, a path, a mount ID, an error text
AUDIT_REASON_LIMIT = 4096  # an audit reason or log message, which may quote several values
DENIAL_LIMIT = 4096  # the message a denied docker user sees


def clip(value: str, limit: int = VALUE_LIMIT, *, tail: int = 0) -> str:
    """`value` if it has at most `limit` characters, else its first characters (and its last
    `tail` ones) around a note of how many were cut, `limit` characters at most in all."""
    if len(value) <= limit:
        return value
    # The note's digits are at most those of len(value): reserve that much, then fill up to `limit`.
    reserve = len(_note(len(value)))
    if limit <= reserve:  # no room for the note
        return value[: max(limit, 0)]
    keep = limit - reserve
    tail = min(tail, keep // 2)
    head = keep - tail
    cut = len(value) - head - tail
    return value[:head] + _note(cut) + (value[len(value) - tail :] if tail else "")


def _note(cut: int) -> str:
    return f"…[{cut} characters cut]"
