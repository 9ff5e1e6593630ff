"""Command line: parse → settings → build → run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from fixeduser import jsonlog
from fixeduser.policy.compiled import compile_policy
from fixeduser.policy.files import read_policy_dir
from fixeduser.settings import ServeSettings, load_settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fixeduser", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the authz plugin and the volume driver")
    serve.add_argument("--config", type=Path, help="TOML file with the options below (dashes or underscores)")
    fields = ServeSettings.model_fields
    for name, field in fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            serve.add_argument(flag, dest=name, action="store_const", const=True, help=field.description)
        elif name == "bindfs_options":
            serve.add_argument(flag, dest=name, action="append", help="extra bindfs option (repeatable)")
        else:
            serve.add_argument(flag, dest=name, help=field.description or f"default: {field.default}")
    serve.set_defaults(run=_serve)

    policy = commands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(required=True, metavar="COMMAND")
    check = policy_commands.add_parser("check", help="validate a policy directory (exit 0 only when clean)")
    check.add_argument("directory", nargs="?", type=Path, default=Path("policies"))
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(run=_policy_check)
    return parser


def _serve(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name, None) for name in ServeSettings.model_fields}
    try:
        settings = load_settings(args.config, overrides)
    except (ValidationError, OSError, ValueError) as exc:
        print(f"fixeduser serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    jsonlog.configure(settings.log_level)
    from fixeduser.app import serve  # noqa: PLC0415 - the policy tools need none of the server

    try:
        asyncio.run(serve(settings))
    except Exception as exc:  # one clear line for operators, the traceback is in the JSON log
        logging.getLogger("fixeduser").exception("fatal")
        print(f"fixeduser serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    policy = compile_policy(read_policy_dir(args.directory))
    if args.json:
        print(json.dumps({"version": policy.version, "problems": [p.model_dump() for p in policy.problems]}))
    elif policy.problems:
        for problem in policy.problems:
            print(problem)
        print(f"{len(policy.problems)} problem(s) in {args.directory}")
    else:
        subjects = policy.subjects()
        print(
            f"{args.directory}: OK, policy version {policy.version}, {len(policy.source.lines)} lines, "
            f"{len(subjects)} subjects"
        )
    return 1 if policy.problems else 0


if __name__ == "__main__":
    sys.exit(main())
