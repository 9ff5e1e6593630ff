"""API versions compared like the daemon's api/types/versions (split on '.', strconv.Atoi, missing parts 0)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixeduser.docker_api import MIN_API_VERSION, classify, compare_versions, is_too_old, path_api_version
from fixeduser.docker_api.versions import _atoi

INT64_MAX = (1 << 63) - 1

# (version in the path, older than 1.24?) — the daemon's answer for each spelling.
VERSION_ROWS = [
    ("1.12", True),
    ("1.23", True),
    ("1.023", True),  # Atoi("023") = 23
    ("1.0023", True),
    ("01.20", True),
    ("1.", True),  # [1, 0]
    (".", True),  # [0, 0]
    ("..", True),
    ("1", True),  # [1] vs [1, 24]: missing part is 0
    ("0.99999999999999999999999", True),  # 0 < 1 whatever the second part
    ("1.2.99", True),
    ("1.23.99999999999999999999", True),
    ("1.24", False),
    ("1.024", False),
    ("01.24", False),
    ("1.24.0", False),
    ("1.24.", False),
    ("1.41", False),
    ("1.99999999999999999999", False),  # clamped to int64 max, still newer
    ("2", False),
    ("2.0", False),
    ("99999999999999999999999.0", False),
]


@pytest.mark.parametrize(("version", "older"), VERSION_ROWS)
def test_older_than_the_minimum_like_the_daemon(version: str, older: bool) -> None:
    assert is_too_old(version) is older
    assert (compare_versions(version, MIN_API_VERSION) < 0) is older


def test_no_version_is_the_current_one() -> None:
    assert not is_too_old(None)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.24", "1.24", 0),
        ("1.24", "1.24.0.0", 0),
        ("1.40", "1.4", 1),  # numeric, not string, order
        ("1.9", "1.10", -1),
        ("1.023", "1.23", 0),
        ("1.99999999999999999999", "1.9223372036854775807", 0),  # both int64 max
        ("1.99999999999999999999", "1.99999999999999999998", 0),  # clamped alike
        ("", "0", 0),
        ("1.x", "1.0", 0),  # a syntax error reads as 0
        ("1.-5", "1.0", -1),  # Atoi takes a sign (the router never passes one)
    ],
)
def test_compare_rows(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("0", 0),
        ("007", 7),
        ("", 0),
        ("+", 0),
        ("-", 0),
        ("+12", 12),
        ("-12", -12),
        ("12x", 0),
        ("9223372036854775807", INT64_MAX),
        ("9223372036854775808", INT64_MAX),
        ("-9223372036854775808", -(1 << 63)),
        ("-9223372036854775809", -(1 << 63)),
        ("18446744073709551615", INT64_MAX),
        ("99999999999999999999x", INT64_MAX),  # ParseUint overflows before it reaches the bad byte
        ("1844674407370955161x", 0),  # no overflow before the bad byte: a syntax error
    ],
)
def test_atoi_quirks(part: str, value: int) -> None:
    assert _atoi(part) == value


@pytest.mark.parametrize(
    ("uri", "version"),
    [
        ("/v1.023/containers/x/start", "1.023"),
        ("/v./_ping", "."),
        ("/v1./version", "1."),
        ("/v%31.20/containers/json", "1.20"),  # the router matches the decoded path
        ("/containers/x/start", None),
        ("/_ping", None),
    ],
)
def test_classify_keeps_the_version_as_written(uri: str, version: str | None) -> None:
    method = "GET" if "json" in uri or "version" in uri or "ping" in uri else "POST"
    api = classify(method, uri)
    assert api is not None and api.api_version == version


@pytest.mark.parametrize(
    ("path", "version"),
    [("/v1.19/containers/x/copy", "1.19"), ("/v1.20", "1.20"), ("/version", None), ("/vx/y", None), ("/v1.2a/x", None)],
)
def test_version_of_an_unknown_route(path: str, version: str | None) -> None:
    assert path_api_version(path) == version


def _reference(version: str, width: int) -> tuple[int, ...]:
    """The router only passes [0-9.]: each part is empty (0) or digits, clamped to int64; missing parts 0."""
    parts = [min(int(p), INT64_MAX) if p else 0 for p in version.split(".")]
    return tuple(parts + [0] * (width - len(parts)))


@given(a=st.from_regex(r"[0-9.]{1,30}", fullmatch=True), b=st.from_regex(r"[0-9.]{1,30}", fullmatch=True))
def test_compare_matches_a_numeric_tuple_order(a: str, b: str) -> None:
    width = max(a.count("."), b.count(".")) + 1
    ra, rb = _reference(a, width), _reference(b, width)
    assert compare_versions(a, b) == (ra > rb) - (ra < rb)
