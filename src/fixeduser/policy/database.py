"""One policy for many hosts: the lines in PostgreSQL, every plugin told of changes at once.

The table is pycasbin's standard `casbin_rule` (the schema of `sqlalchemy-adapter`), so any Casbin
tool can read and edit it. A statement-level trigger sends `NOTIFY casbin_role_watcher` on every
change, whoever makes it (`fixeduser policy import`, psql, another Casbin program), on the channel
`casbin-postgresql-watcher` uses by default; each plugin LISTENs and reloads through the same
validation as files: a bad edit keeps the last good policy on every host.

Why not the `casbin-postgresql-watcher` package itself: it forks a child process of the running
(multi-threaded, asyncio) plugin for its LISTEN loop, must be polled for news through a pipe,
sleeps a fixed 2 s before it listens, and takes host/user/password instead of a URL. A LISTEN on an
async psycopg connection is a few lines, stays in the event loop and reconnects on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy_adapter.adapter import Base, create_casbin_rule_class  # type: ignore[import-untyped]

from fixeduser.policy.compiled import CompiledPolicy, compile_policy
from fixeduser.policy.files import (
    MODEL_FILE,
    PolicyLine,
    PolicyProblem,
    PolicySource,
    make_line,
    model_field_counts,
)

log = logging.getLogger(__name__)

TABLE = "casbin_rule"
CHANNEL = "casbin_role_watcher"  # casbin-postgresql-watcher's default channel
_COLUMNS = ("v0", "v1", "v2", "v3", "v4", "v5")
_TRIGGER_SQL = (
    f"""CREATE OR REPLACE FUNCTION fixeduser_policy_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME || ' changed'); RETURN NULL; END $$""",
    f"""CREATE OR REPLACE TRIGGER fixeduser_policy_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION fixeduser_policy_notify()""",
)


def database_url(url: str) -> URL:
    """A SQLAlchemy URL using psycopg 3 for PostgreSQL (the plain `postgresql://` would want psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _libpq_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PolicyDatabase:
    """The `casbin_rule` table: read it as a policy source, replace it in one transaction."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.engine = sqlalchemy.create_engine(self.url, pool_pre_ping=True)
        self.rule = create_casbin_rule_class(TABLE)

    @property
    def label(self) -> str:
        """Names the table in problems and logs, never the password."""
        host = self.url.host or self.url.query.get("host") or "local"
        return f"{TABLE}@{host}/{self.url.database}"

    def ensure_schema(self) -> None:
        """Create the table (pycasbin's schema) and the NOTIFY trigger if they are missing."""
        Base.metadata.create_all(self.engine, tables=[self.rule.__table__])
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                for statement in _TRIGGER_SQL:
                    conn.execute(text(statement))

    def rows(self) -> list[tuple[int, str, tuple[str | None, ...]]]:
        rule = self.rule
        columns = [getattr(rule, c) for c in _COLUMNS]
        with self.engine.connect() as conn:
            result = conn.execute(sqlalchemy.select(rule.id, rule.ptype, *columns).order_by(rule.id))
            return [(row[0], row[1], tuple(row[2:])) for row in result]

    def source(self, field_counts: dict[str, int], model_path: str, problems: list[PolicyProblem]) -> PolicySource:
        lines: list[PolicyLine] = []
        try:
            rows = self.rows()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            problems.append(PolicyProblem(file=self.label, line=None, message=f"cannot read: {exc.__class__.__name__}"))
            rows = []
        else:
            if not rows:
                problems.append(PolicyProblem(file=self.label, line=None, message="the policy table is empty"))
        for row_id, ptype, values in rows:
            count = field_counts.get(ptype, 0)
            fields = tuple((v or "").strip() for v in values[:count])
            extra = [v for v in values[count:] if v]
            if extra:
                problems.append(
                    PolicyProblem(file=self.label, line=row_id, message=f"{ptype} rows use {count} columns, not more")
                )
                continue
            line = make_line(
                (ptype or "").strip(), fields, file=self.label, number=row_id, field_counts=field_counts,
                problems=problems,
            )  # fmt: skip
            if line is not None:
                lines.append(line)
        return PolicySource(
            model_path=model_path, field_counts=field_counts, lines=tuple(lines), problems=tuple(problems)
        )

    def replace(self, lines: tuple[PolicyLine, ...]) -> None:
        """Swap the whole table for these lines in one transaction (readers see old or new, never half)."""
        self.ensure_schema()
        rule = self.rule
        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.delete(rule))
            if lines:
                conn.execute(
                    sqlalchemy.insert(rule),
                    [_row(line) for line in lines],
                )

    def close(self) -> None:
        self.engine.dispose()


def _row(line: PolicyLine) -> dict[str, str | None]:
    # Every row names every column: an executemany takes its columns from the first row.
    padded = (*line.fields, *([None] * (len(_COLUMNS) - len(line.fields))))
    return {"ptype": line.ptype, **dict(zip(_COLUMNS, padded, strict=True))}


class DatabaseLoader:
    """A `PolicyLoader`: the model from the policy directory, the lines from the database."""

    def __init__(self, url: str, policy_dir: Path) -> None:
        self.database = PolicyDatabase(url)
        self.model_path = policy_dir / MODEL_FILE

    @property
    def description(self) -> str:
        return self.database.label

    def load(self, previous: CompiledPolicy | None = None) -> CompiledPolicy:
        problems: list[PolicyProblem] = []
        field_counts = model_field_counts(self.model_path, problems)
        return compile_policy(self.database.source(field_counts, str(self.model_path), problems), previous=previous)


async def listen(
    url: str,
    on_change: Callable[[str], Any],
    *,
    settle: float = 0.2,
    retry: float = 2.0,
    ready: asyncio.Event | None = None,
) -> None:
    """LISTEN for policy changes forever; call `on_change(reason)` after each burst of NOTIFYs.

    After a lost connection it reconnects and reloads once, since notifications sent meanwhile
    are gone.
    """
    conninfo = _libpq_conninfo(database_url(url))
    first = True
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if ready is not None:
                    ready.set()
                if not first:
                    log.info("policy database listener reconnected")
                    await _call(on_change, "policy database reconnected")
                first = False
                await _pump(conn, on_change, settle)
        except asyncio.CancelledError:
            raise
        except (psycopg.Error, OSError) as exc:
            log.warning("policy database listener: %s; retrying in %.0f s", exc, retry)
            first = False
        await asyncio.sleep(retry)


async def _pump(conn: psycopg.AsyncConnection[Any], on_change: Callable[[str], Any], settle: float) -> None:
    while True:
        async for _ in conn.notifies(stop_after=1):
            pass
        # Several statements (or hosts) may change the table in a row: take them all, reload once.
        async for _ in conn.notifies(timeout=settle):
            pass
        await _call(on_change, "policy database changed")


async def _call(on_change: Callable[[str], Any], reason: str) -> None:
    result = on_change(reason)
    if asyncio.iscoroutine(result):
        await result
