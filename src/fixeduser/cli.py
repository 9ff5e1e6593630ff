"""fixeduser: fixed-user volumes for Docker, enforced by an authorization plugin.

Command line: parse → settings → build → run. Each command lives in `fixeduser.commands`.
"""

from __future__ import annotations

import argparse
import sys

from fixeduser.commands import register_all


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fixeduser", description=__doc__.splitlines()[0])
    register_all(root.add_subparsers(required=True, metavar="COMMAND"))
    return root


if __name__ == "__main__":
    sys.exit(main())
