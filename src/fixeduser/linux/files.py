"""File writing shared by the plugin and the admin commands (no dependency beyond the standard library)."""

from __future__ import annotations

import os
from pathlib import Path


def write_private_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically, created with `mode` (never readable by others first)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
