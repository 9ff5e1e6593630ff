"""`fixeduser policy ...`: tools for the people who edit policy files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fixeduser.policy.compiled import compile_policy
from fixeduser.policy.files import read_policy_dir


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = subcommands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(required=True, metavar="COMMAND")
    check = policy_commands.add_parser("check", help="validate a policy directory (exit 0 only when clean)")
    check.add_argument("directory", nargs="?", type=Path, default=Path("policies"))
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(run=check_policy)


def check_policy(args: argparse.Namespace) -> int:
    policy = compile_policy(read_policy_dir(args.directory))
    if args.json:
        print(json.dumps({"version": policy.version, "problems": [p.model_dump() for p in policy.problems]}))
    elif policy.problems:
        for problem in policy.problems:
            print(problem)
        print(f"{len(policy.problems)} problem(s) in {args.directory}")
    else:
        print(
            f"{args.directory}: OK, policy version {policy.version}, {len(policy.source.lines)} lines, "
            f"{len(policy.subjects())} subjects"
        )
    return 1 if policy.problems else 0
