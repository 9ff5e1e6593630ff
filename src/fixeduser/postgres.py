"""PostgreSQL plumbing shared by the policy and the volume state: URLs, and a LISTEN loop.

A LISTEN on an async psycopg connection is a few lines, stays in the event loop and reconnects on
its own; see `fixeduser.policy.database` for why no watcher package is used instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import URL, make_url

log = logging.getLogger(__name__)


def database_url(url: str) -> URL:
    """A SQLAlchemy URL using psycopg 3 for PostgreSQL (the plain `postgresql://` would want psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def libpq_conninfo(url: str | URL) -> str:
    """The URL as libpq (psycopg) takes it, password included."""
    parsed = database_url(url) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def database_label(url: str | URL) -> str:
    """Host and database of a URL, for messages and logs: never the password."""
    parsed = database_url(url) if isinstance(url, str) else url
    host = parsed.host or parsed.query.get("host") or "local"
    return f"{host}/{parsed.database}"


async def listen(
    url: str,
    channel: str,
    on_change: Callable[[str], Any],
    *,
    settle: float = 0.2,
    retry: float = 2.0,
    ready: asyncio.Event | None = None,
) -> None:
    """LISTEN on `channel` forever; call `on_change(reason)` after each burst of NOTIFYs.

    After a lost connection it reconnects and calls `on_change` once, since notifications sent
    meanwhile are gone.
    """
    conninfo = libpq_conninfo(url)
    first = True
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                if ready is not None:
                    ready.set()
                if not first:
                    log.info("database listener reconnected", extra={"channel": channel})
                    await _call(on_change, f"{channel}: database reconnected")
                first = False
                await _pump(conn, on_change, channel, settle)
        except asyncio.CancelledError:
            raise
        except (psycopg.Error, OSError) as exc:
            log.warning("database listener: %s; retrying in %.0f s", exc, retry, extra={"channel": channel})
            first = False
        await asyncio.sleep(retry)


async def _pump(
    conn: psycopg.AsyncConnection[Any], on_change: Callable[[str], Any], channel: str, settle: float
) -> None:
    while True:
        async for _ in conn.notifies(stop_after=1):
            pass
        # Several statements (or hosts) may change the table in a row: take them all, act once.
        async for _ in conn.notifies(timeout=settle):
            pass
        await _call(on_change, f"{channel}: changed")


async def _call(on_change: Callable[[str], Any], reason: str) -> None:
    result = on_change(reason)
    if asyncio.iscoroutine(result):
        await result
