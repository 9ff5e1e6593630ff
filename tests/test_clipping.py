"""Bounded quoting: `clip`, and the JSON log formatter clipping every value it writes."""

from __future__ import annotations

import json
import logging
import sys

from hypothesis import given
from hypothesis import strategies as st

from fixeduser.app.jsonlog import EXCEPTION_LIMIT, MESSAGE_LIMIT, JsonFormatter
from fixeduser.clipping import clip


@given(st.text(max_size=3000), st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=500))
def test_clip_is_bounded_keeps_the_start_and_is_idempotent(value: str, limit: int, tail: int) -> None:
    clipped = clip(value, limit, tail=tail)
    assert len(clipped) <= max(limit, 0)
    if len(value) <= limit:
        assert clipped == value
    assert clip(clipped, limit, tail=tail) == clipped


def test_clip_says_how_much_was_cut_and_can_keep_the_end() -> None:
    value = "a" * 1000 + "Z" * 10
    assert clip(value, 100) == "a" * 78 + "…[932 characters cut]"
    assert len(clip(value, 100)) == 99  # the note reserves room for the longest count
    clipped = clip(value, 100, tail=10)
    assert clipped.endswith("…[932 characters cut]" + "Z" * 10) or clipped.endswith("characters cut]" + "Z" * 10)
    assert clipped.startswith("a" * 60) and len(clipped) <= 100
    assert clip("short", 100) == "short"


def _format(message: str, *args: object, exc: bool = False, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("fixeduser.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    if exc:
        try:
            raise ValueError("boom " + "e" * (1 << 20))
        except ValueError:
            record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert len(line) < 64 * 1024, len(line)
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_the_log_formatter_clips_every_extra_field_the_message_and_the_traceback() -> None:
    """A 1 MiB mount ID, an 8 MiB URI, a huge list, a %s argument and an exception: one bounded line."""
    entry = _format(
        "mount %s failed",
        "i" * (1 << 20),
        exc=True,
        mount_id="m" * (1 << 20),
        uri="/containers/" + "u" * (8 << 20),
        problems=[{"problem": "p" * 100}] * 1000,
        count=3,
        ok=True,
        nothing=None,
        small=["a", "b"],
        other=object(),
    )
    assert isinstance(entry["mount_id"], str) and entry["mount_id"].startswith("mmmm")
    assert "characters cut]" in entry["mount_id"] and len(entry["mount_id"]) <= 1024
    assert isinstance(entry["uri"], str) and entry["uri"].startswith("/containers/uuu") and len(entry["uri"]) <= 1024
    assert isinstance(entry["problems"], str) and len(entry["problems"]) <= MESSAGE_LIMIT
    assert (entry["count"], entry["ok"], entry["nothing"], entry["small"]) == (3, True, None, ["a", "b"])
    assert isinstance(entry["msg"], str) and entry["msg"].startswith("mount iii") and len(entry["msg"]) <= MESSAGE_LIMIT
    exception = entry["exception"]
    assert isinstance(exception, str) and len(exception) <= EXCEPTION_LIMIT
    assert exception.startswith("Traceback") and "characters cut]" in exception  # start and end kept


def test_short_values_are_logged_as_before() -> None:
    entry = _format("policy version %s in force", "v1", policy_version="v1", problems=[{"file": "p.csv", "line": 3}])
    assert entry["msg"] == "policy version v1 in force"
    assert entry["policy_version"] == "v1" and entry["problems"] == [{"file": "p.csv", "line": 3}]


def test_a_value_json_cannot_write_is_logged_as_its_text() -> None:
    entry = _format("odd", pairs={("a", 1): "x" * 10_000})
    assert isinstance(entry["pairs"], str) and entry["pairs"].startswith("{('a', 1): 'xxx")
    assert len(entry["pairs"]) <= MESSAGE_LIMIT
