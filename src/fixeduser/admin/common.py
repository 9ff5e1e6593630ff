"""What the admin commands share: finding the policy, and printing tables for people."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fixeduser.policy.compiled import CompiledPolicy, compile_policy
from fixeduser.policy.files import read_policy_dir


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy-dir", type=Path, default=Path("policies"), help="default: policies")
    parser.add_argument(
        "--policy-database",
        default=None,
        metavar="URL",
        help="read the policy lines from this database (SQLAlchemy URL) instead of the directory's *.csv",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def load_for_admin(args: argparse.Namespace) -> CompiledPolicy:
    """The policy the admin asked about; its problems are printed as warnings, not fatal."""
    if args.policy_database:
        from fixeduser.policy.database import DatabaseLoader  # noqa: PLC0415 - SQLAlchemy only when asked for

        policy = DatabaseLoader(args.policy_database, args.policy_dir).load()
    else:
        policy = compile_policy(read_policy_dir(args.policy_dir))
    if policy.problems:
        print(
            f"warning: this policy has {len(policy.problems)} problem(s) and would not be loaded by the plugin "
            "(see `fixeduser policy check`)",
            file=sys.stderr,
        )
    return policy


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table with aligned columns."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
