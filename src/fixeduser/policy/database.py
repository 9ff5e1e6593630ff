"""One policy for many hosts: the lines in PostgreSQL, every plugin told of changes at once.

The table is pycasbin's standard `casbin_rule` (the schema of `sqlalchemy-adapter`), so any Casbin
tool can read and edit it. A statement-level trigger sends `NOTIFY casbin_role_watcher` on every
change, whoever makes it (`fixeduser policy import`, psql, another Casbin program), on the channel
`casbin-postgresql-watcher` uses by default; each plugin LISTENs and reloads through the same
validation as files: a bad edit keeps the last good policy on every host.

Why not the `casbin-postgresql-watcher` package itself: it forks a child process of the running
(multi-threaded, asyncio) plugin for its LISTEN loop, must be polled for news through a pipe,
sleeps a fixed 2 s before it listens, and takes host/user/password instead of a URL. A LISTEN on an
async psycopg connection (`fixeduser.postgres.listen`) is a few lines, stays in the event loop and
reconnects on its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy
from sqlalchemy import text
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
from fixeduser.postgres import database_label, database_url

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


class PolicyDatabase:
    """The `casbin_rule` table: read it as a policy source, replace it in one transaction."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.engine = sqlalchemy.create_engine(self.url, pool_pre_ping=True)
        self.rule = create_casbin_rule_class(TABLE)

    @property
    def label(self) -> str:
        """Names the table in problems and logs, never the password."""
        return f"{TABLE}@{database_label(self.url)}"

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
