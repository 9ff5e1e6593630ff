"""API versions in request paths, compared exactly as the daemon's ``api/types/versions`` does.

The daemon splits both versions on ``.``, reads each part with Go's ``strconv.Atoi`` (whose error
results it ignores) and treats missing parts as 0. So ``1.023`` is 1.23, ``01.20`` is 1.20,
``1.`` and ``.`` are 1.0 and 0.0, and a part too large for an int64 counts as its maximum.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["MIN_API_VERSION", "compare_versions", "is_too_old", "path_api_version"]

# The oldest version that Docker 26.1 and 28.x serve. Debian 12's 20.10 still serves down to 1.12
# and, below 1.24, applies a HostConfig sent in the body of `POST /containers/{id}/start`.
MIN_API_VERSION: Final = "1.24"

_INT64_MAX: Final = (1 << 63) - 1
_INT64_MIN: Final = -(1 << 63)
_UINT64_MAX: Final = (1 << 64) - 1
_DIGITS: Final = re.compile(r"[0-9]+")
# The router's `/v{version:[0-9.]+}` prefix, for paths that match no known route.
_PREFIX: Final = re.compile(r"/v([0-9.]+)(?:/|$)")


def _atoi(part: str) -> int:
    """Go's ``strconv.Atoi`` value with its error ignored: 0 on a syntax error, clamped on overflow.

    ParseUint reports an overflow as soon as it happens, so a digit run too large for 64 bits is
    clamped even when a bad byte follows it.
    """
    sign, rest = (part[0], part[1:]) if part[:1] in ("+", "-") else ("", part)
    digits = _DIGITS.match(rest)
    magnitude = int(digits.group()) if digits else 0
    if magnitude > _UINT64_MAX:
        return _INT64_MIN if sign == "-" else _INT64_MAX
    if digits is None or digits.end() != len(rest):
        return 0
    return max(_INT64_MIN, -magnitude) if sign == "-" else min(_INT64_MAX, magnitude)


def compare_versions(v1: str, v2: str) -> int:
    """-1, 0 or 1 as the daemon's ``versions.compare`` (v1 older, equal, newer)."""
    if v1 == v2:
        return 0
    a, b = v1.split("."), v2.split(".")
    for i in range(max(len(a), len(b))):
        x = _atoi(a[i]) if i < len(a) else 0
        y = _atoi(b[i]) if i < len(b) else 0
        if x != y:
            return 1 if x > y else -1
    return 0


@lru_cache(maxsize=64)  # clients repeat a handful of versions; the bound keeps odd spellings from growing it
def is_too_old(version: str | None) -> bool:
    """Whether a path's API version is older than :data:`MIN_API_VERSION`; None (no prefix) is current."""
    return version is not None and compare_versions(version, MIN_API_VERSION) < 0


def path_api_version(path: str) -> str | None:
    """The ``/vN.NN`` prefix of a cleaned path that matched no known route, if it has one."""
    m = _PREFIX.match(path)
    return m.group(1) if m else None
