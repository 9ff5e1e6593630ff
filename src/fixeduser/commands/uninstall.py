"""`fixeduser uninstall`: reverse `fixeduser install`; volume data, state and policies stay."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fixeduser.admin.install import InstallError, uninstall


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subcommands.add_parser("uninstall", help="undo `fixeduser install` (keeps volume data and policies)")
    cmd.add_argument("--root", type=Path, default=Path("/"), help="the --root given to install (default /)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    if root == Path("/"):
        print("first: systemctl disable --now fixeduser.service (after docker stopped using it)", file=sys.stderr)
    try:
        done = uninstall(root)
    except (InstallError, OSError) as exc:
        print(f"fixeduser uninstall: {exc}", file=sys.stderr)
        return 1
    print("\n".join(f"  {line}" for line in done))
    if root == Path("/"):
        print("next: systemctl daemon-reload && systemctl restart docker")
    return 0
