"""The plugin's persistent state: one SQLite file, written off the event loop.

Every table is small and mirrored in memory by its owner (ledger, registry); the database only
has to survive restarts, so writes go through `asyncio.to_thread` and never block a decision.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
    volumes TEXT NOT NULL, restart INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mounts (
    mount_id TEXT NOT NULL, volume TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (mount_id, volume)
);
"""


class StateStore:
    """Thread-safe access to the state database; async methods run the SQL in a worker thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL survives a crash of the plugin; only a power cut may lose the last rows,
        # and then mounts are gone anyway and unknown containers fail closed. FULL costs an fsync on
        # every container create's AuthZRes, which the docker CLI waits for.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._db.execute(sql, params)

    async def write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        await asyncio.to_thread(self.execute, sql, params)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
