"""`fixeduser serve`: run the authz plugin and the volume driver."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from fixeduser.app import jsonlog
from fixeduser.app.settings import ServeSettings, load_settings
from fixeduser.linux.malloc import share_one_arena


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subcommands.add_parser("serve", help="run the authz plugin and the volume driver")
    serve.add_argument("--config", type=Path, help="TOML file with the options below (dashes or underscores)")
    for name, field in ServeSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            serve.add_argument(flag, dest=name, action="store_const", const=True, help=field.description)
        elif name == "bindfs_options":
            serve.add_argument(flag, dest=name, action="append", help="extra bindfs option (repeatable)")
        else:
            serve.add_argument(flag, dest=name, help=field.description or f"default: {field.default}")
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name, None) for name in ServeSettings.model_fields}
    try:
        settings = load_settings(args.config, overrides)
    except (ValidationError, OSError, ValueError) as exc:
        print(f"fixeduser serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    jsonlog.configure(settings.log_level)
    share_one_arena()  # before any thread starts
    from fixeduser.app.serve import serve  # noqa: PLC0415 - the admin tools need none of the server

    try:
        # asyncio's own loop, not uvloop (a little less CPU per call, bench/NOTES.md#event-loop): uvloop's child
        # processes keep a copy of their stdio socketpair, so a daemonized bindfs holds our pipe
        # open, the EOF that says it is done never comes, and every mount hangs.
        asyncio.run(serve(settings))
    except Exception as exc:  # one clear line for operators, the traceback is in the JSON log
        logging.getLogger("fixeduser").exception("fatal")
        print(f"fixeduser serve: {exc}", file=sys.stderr)
        return 1
    return 0
