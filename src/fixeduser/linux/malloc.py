"""glibc's malloc, told to keep every thread on one arena."""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # mallopt(3)


def share_one_arena() -> bool:
    """Let every thread allocate from glibc's main arena (`mallopt(M_ARENA_MAX, 1)`); True if it did.

    By default each thread that allocates gets an arena of its own, and the threads the plugin runs work off
    the event loop (a policy compile, the audit writer, checkpoints) left their arenas' memory behind: at a
    reload of 100,000 policy lines the peak was 15 MB higher (bench/NOTES.md#malloc-arenas). The GIL
    serializes nearly all of Python's allocations anyway. Called before any thread starts; an admin's own
    `MALLOC_ARENA_MAX` is left as it is, and without glibc nothing changes.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not _is_glibc():
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False


def _is_glibc() -> bool:
    """Asked of the C library itself (`platform.libc_ver` guesses by reading the interpreter's file)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # a C library that does not know the name
        return False
