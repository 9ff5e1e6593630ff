"""fixeduser benchmark suite: `sudo .venv/bin/python -m bench [--quick]` (see bench/README.md)."""
