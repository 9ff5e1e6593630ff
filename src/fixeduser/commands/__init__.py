"""One module per top-level command; each has `register(subcommands)`. Found automatically."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}").register(subcommands)
