"""`fixeduser policy ...`: tools for the people who edit policies (files or the shared database)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fixeduser.policy.compiled import CompiledPolicy, compile_policy
from fixeduser.policy.files import MODEL_FILE, read_policy_dir


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = subcommands.add_parser("policy", help="policy tools: check, import, export")
    policy_commands = policy.add_subparsers(required=True, metavar="COMMAND")
    check = policy_commands.add_parser("check", help="validate a policy (exit 0 only when clean)")
    check.add_argument("directory", nargs="?", type=Path, default=Path("policies"))
    check.add_argument("--database", metavar="URL", help="check the lines in this database (model from DIRECTORY)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(run=check_policy)

    load = policy_commands.add_parser(
        "import", help="replace the database policy with a checked policy directory (one transaction)"
    )
    load.add_argument("directory", type=Path)
    load.add_argument("--database", metavar="URL", required=True, help="SQLAlchemy URL, e.g. postgresql://...")
    load.set_defaults(run=import_policy)

    dump = policy_commands.add_parser("export", help="write the database policy as DIRECTORY/policy.csv")
    dump.add_argument("directory", type=Path)
    dump.add_argument("--database", metavar="URL", required=True)
    dump.add_argument("--model", type=Path, default=Path("policies") / MODEL_FILE, help="model to copy beside it")
    dump.set_defaults(run=export_policy)


def _compile(args: argparse.Namespace) -> tuple[CompiledPolicy, str]:
    if args.database:
        from fixeduser.policy.database import DatabaseLoader  # noqa: PLC0415 - SQLAlchemy only when asked for

        loader = DatabaseLoader(args.database, args.directory)
        return loader.load(), loader.description
    return compile_policy(read_policy_dir(args.directory)), str(args.directory)


def check_policy(args: argparse.Namespace) -> int:
    policy, where = _compile(args)
    if args.json:
        print(json.dumps({"version": policy.version, "problems": [p.model_dump() for p in policy.problems]}))
    elif policy.problems:
        for problem in policy.problems:
            print(problem)
        print(f"{len(policy.problems)} problem(s) in {where}")
    else:
        print(
            f"{where}: OK, policy version {policy.version}, {len(policy.source.lines)} lines, "
            f"{len(policy.subjects())} subjects"
        )
    return 1 if policy.problems else 0


def import_policy(args: argparse.Namespace) -> int:
    from fixeduser.policy.database import PolicyDatabase  # noqa: PLC0415 - SQLAlchemy only when asked for

    policy = compile_policy(read_policy_dir(args.directory))
    if policy.problems:
        for problem in policy.problems:
            print(problem, file=sys.stderr)
        print(f"fixeduser policy import: {len(policy.problems)} problem(s); database unchanged", file=sys.stderr)
        return 1
    database = PolicyDatabase(args.database)
    try:
        database.replace(policy.source.lines)
    finally:
        database.close()
    print(f"imported {len(policy.source.lines)} lines into {database.label}: policy version {policy.version}")
    return 0


def export_policy(args: argparse.Namespace) -> int:
    from fixeduser.policy.database import PolicyDatabase  # noqa: PLC0415 - SQLAlchemy only when asked for

    database = PolicyDatabase(args.database)
    try:
        rows = database.rows()
    finally:
        database.close()
    args.directory.mkdir(parents=True, exist_ok=True)
    body = "".join(", ".join([ptype, *(v for v in values if v is not None)]) + "\n" for _, ptype, values in rows)
    header = f"# exported from {database.label}; import with `fixeduser policy import DIR --database URL`\n"
    (args.directory / "policy.csv").write_text(header + body)
    model = args.directory / MODEL_FILE
    if not model.exists() and args.model.exists():
        model.write_text(args.model.read_text())
    print(f"exported {len(rows)} lines to {args.directory / 'policy.csv'}")
    return 0
