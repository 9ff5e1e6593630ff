"""The plugin's log handler: lines logged on the event loop are written once the loop's current step is over."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import UTC, datetime

from fixeduser.app.jsonlog import AfterStepHandler, JsonFormatter


def _logger(stream: io.StringIO) -> tuple[logging.Logger, AfterStepHandler]:
    handler = AfterStepHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"fixeduser.test.jsonlog.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def _messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]


def test_a_line_logged_on_the_loop_is_written_after_the_step_in_order() -> None:
    stream = io.StringIO()
    logger, _ = _logger(stream)
    seen_within_step: list[list[str]] = []

    async def step() -> None:
        logger.info("first")
        logger.info("second", extra={"volume": "v"})
        seen_within_step.append(_messages(stream))
        await asyncio.sleep(0)  # the step ends here; the lines go out before this task runs again
        seen_within_step.append(_messages(stream))

    asyncio.run(step())
    assert seen_within_step == [[], ["first", "second"]]
    assert json.loads(stream.getvalue().splitlines()[1])["volume"] == "v"


def test_a_line_logged_off_the_loop_goes_out_at_once_after_the_waiting_ones() -> None:
    stream = io.StringIO()
    logger, _ = _logger(stream)

    async def step() -> None:
        logger.info("on the loop")
        await asyncio.to_thread(logger.info, "in a worker thread")

    asyncio.run(step())
    logger.info("with no loop")
    assert _messages(stream) == ["on the loop", "in a worker thread", "with no loop"]


def test_flush_writes_what_waits_when_the_loop_never_runs_again() -> None:
    stream = io.StringIO()
    logger, handler = _logger(stream)
    loop = asyncio.new_event_loop()
    try:

        def log_and_stop() -> None:
            logger.info("last words")
            loop.stop()  # ends the run after this batch of callbacks: the write is left waiting

        loop.call_soon(log_and_stop)
        loop.run_forever()
    finally:
        loop.close()
    assert _messages(stream) == []
    handler.flush()  # also what logging.shutdown does at exit
    assert _messages(stream) == ["last words"]


def test_the_time_stamp_is_iso_8601_utc_with_milliseconds() -> None:
    record = logging.LogRecord("fixeduser.test", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1_796_601_692.9876
    stamp = json.loads(JsonFormatter().format(record))["time"]
    assert stamp == "2026-12-07T00:01:32.987+00:00"
    assert datetime.fromisoformat(stamp) == datetime.fromtimestamp(1_796_601_692.987, UTC)


def test_values_orjson_cannot_write_still_make_a_line() -> None:
    """An integer past 64 bits, tuple keys, a set, an integer past Python's limit of digits: the line is written
    all the same, with their text."""
    record = logging.LogRecord("fixeduser.test", logging.INFO, __file__, 1, "odd values", None, None)
    huge = 10**5000
    record.__dict__.update(big=1 << 70, keyed={("a", 1): "x"}, many={3}, nested=[1 << 80], huge=huge, huger=[huge])
    entry = json.loads(JsonFormatter().format(record))
    assert entry["huge"] == "<int too large to write>" and entry["huger"] == "<list too large to write>"
    assert entry["msg"] == "odd values"
    assert entry["big"] in (1 << 70, str(1 << 70))
    assert "('a', 1)" in str(entry["keyed"]) and "3" in str(entry["many"]) and str(1 << 80) in str(entry["nested"])
