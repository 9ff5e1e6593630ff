"""Reading a policy directory: Casbin's model file plus policy lines that remember where they came from."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import casbin  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict

MODEL_FILE = "model.conf"
POLICY_GLOB = "*.csv"

# Casbin splits on commas outside [] and (); quotes are not honoured, so we refuse them.
_FIELD_SPLIT = re.compile(r",(?![^\[]*\])(?![^(]*\))")


class PolicyLine(NamedTuple):
    """One policy line and its origin, so every decision can name the line that made it.

    A named tuple, not a pydantic model or a frozen dataclass: a policy has up to hundreds of
    thousands of them, and a tuple is built in C (a frozen dataclass sets each field in Python).
    """

    ptype: str
    fields: tuple[str, ...]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def text(self) -> str:
        return ", ".join((self.ptype, *self.fields))


class PolicyProblem(BaseModel):
    """A defect in a policy directory, located as precisely as we can."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{place}: {self.message}"


@dataclass(frozen=True)
class PolicySource:
    """The raw content of a policy directory, before compilation."""

    model_path: str
    field_counts: dict[str, int]
    lines: tuple[PolicyLine, ...]
    problems: tuple[PolicyProblem, ...]


def read_policy_dir(directory: Path, *, previous: PolicySource | None = None) -> PolicySource:
    """Read the model and every `*.csv` file; collect problems instead of stopping at the first.

    `previous` (the source of the policy in force, read with the same model) lets a line whose
    text is exactly one that source had in the same file reuse its parsed form."""
    problems: list[PolicyProblem] = []
    model_path = directory / MODEL_FILE
    field_counts = model_field_counts(model_path, problems)
    csv_files = sorted(directory.glob(POLICY_GLOB))
    if not csv_files:
        problems.append(PolicyProblem(file=str(directory), line=None, message="no *.csv policy files"))
    known = _known_lines(previous) if previous is not None and previous.field_counts == field_counts else {}
    lines: list[PolicyLine] = []
    for path in csv_files:
        lines.extend(_read_policy_file(path, field_counts, problems, known))
    return PolicySource(
        model_path=str(model_path),
        field_counts=field_counts,
        lines=tuple(lines),
        problems=tuple(problems),
    )


def model_field_counts(model_path: Path, problems: list[PolicyProblem]) -> dict[str, int]:
    """Field count of every policy and role type the Casbin model defines."""
    try:
        model = casbin.Enforcer(str(model_path)).get_model()
    except Exception as exc:  # casbin raises bare Exceptions for model syntax errors
        problems.append(PolicyProblem(file=str(model_path), line=None, message=f"cannot load model: {exc}"))
        return {}
    counts: dict[str, int] = {}
    for section in ("p", "g"):
        for ptype, assertion in model.model.get(section, {}).items():
            counts[ptype] = len(assertion.tokens) if section == "p" else assertion.value.count("_")
    return counts


def _known_lines(previous: PolicySource) -> dict[tuple[str, str], PolicyLine]:
    """(file, the line's text as parsing writes it) -> the parsed line."""
    return {(line.file, line.text): line for line in previous.lines}


def _read_policy_file(
    path: Path,
    field_counts: dict[str, int],
    problems: list[PolicyProblem],
    known: dict[tuple[str, str], PolicyLine],
) -> list[PolicyLine]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(PolicyProblem(file=str(path), line=None, message=f"cannot read: {exc.strerror}"))
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(PolicyProblem(file=str(path), line=None, message=f"not UTF-8: {exc}"))
        return []
    if not text.strip():
        # A zero-length file is what an interrupted save or a `> policy.csv` leaves behind.
        problems.append(PolicyProblem(file=str(path), line=None, message="file is empty (truncated?)"))
        return []
    if not text.endswith("\n"):
        # An editor that saves in place can leave a half-written last line behind.
        problems.append(
            PolicyProblem(
                file=str(path),
                line=text.count("\n") + 1,
                message="file does not end with a newline (truncated?)",
            )
        )
    lines = []
    file = str(path)
    for number, content in enumerate(text.splitlines(), start=1):
        seen = known.get((file, content.strip())) if known else None
        if seen is not None:  # parsing `ptype, field, ...` gives back exactly these fields
            lines.append(seen if seen.line == number else seen._replace(line=number))
            continue
        parsed = _parse_line(content, file, number, field_counts, problems)
        if parsed is not None:
            lines.append(parsed)
    return lines


def _parse_line(
    content: str,
    file: str,
    number: int,
    field_counts: dict[str, int],
    problems: list[PolicyProblem],
) -> PolicyLine | None:
    stripped = content.strip()
    if not stripped or stripped[0] == "#":
        return None
    if '"' in stripped or "'" in stripped:
        message = "quotes are not allowed: Casbin does not honour them, so they would become part of a name"
        problems.append(PolicyProblem(file=file, line=number, message=message))
        return None
    # Casbin's bracket-aware split only matters when a bracket is there; plain split is much faster.
    parts = _FIELD_SPLIT.split(stripped) if "[" in stripped or "(" in stripped else stripped.split(",")
    # Types, subjects, roles and actions repeat across thousands of lines: share one copy of each.
    tokens = [sys.intern(token.strip()) for token in parts]
    return make_line(
        tokens[0], tuple(tokens[1:]), file=file, number=number, field_counts=field_counts, problems=problems
    )


def make_line(
    ptype: str,
    fields: tuple[str, ...],
    *,
    file: str,
    number: int,
    field_counts: dict[str, int],
    problems: list[PolicyProblem],
) -> PolicyLine | None:
    """A policy line from its type and fields (from a file or a database row), or None and a problem."""
    count = field_counts.get(ptype)
    if count is not None and len(fields) == count and (not fields or fields[0]):
        return PolicyLine(ptype=ptype, fields=fields, file=file, line=number)
    problems.append(PolicyProblem(file=file, line=number, message=_line_problem(ptype, fields, field_counts)))
    return None


def _line_problem(ptype: str, fields: tuple[str, ...], field_counts: dict[str, int]) -> str:
    if ptype not in field_counts:
        known = ", ".join(sorted(field_counts)) or "none (model failed to load)"
        return f"unknown line type {ptype!r}; the model defines: {known}"
    if len(fields) != field_counts[ptype]:
        text = ", ".join((ptype, *fields))
        return f"{ptype} lines take {field_counts[ptype]} fields, this one has {len(fields)}: {text!r}"
    return "the subject (first field) is empty"
