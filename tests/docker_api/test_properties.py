"""Property tests: the classifier and the decoder never fail in unexpected ways."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fixeduser.docker_api import (
    BodyError,
    classify,
    decode,
    parse_container_create,
    parse_exec_create,
    parse_volume_create,
)

URI_ALPHABET = st.sampled_from(list("/.%?&=;+:#vV0123456789abcdefABCDEF xyz\n\u00e9\u212a"))
uris = st.one_of(
    st.text(),
    st.text(URI_ALPHABET),
    st.lists(
        st.sampled_from(
            ["/", "/v1.41", "/containers", "/images", "/json", "/start", "/..", "/.", "//", "%2F",
             "%", "%zz", "%ff", "?", "&", "=", "a", "http://h", "/exec", "/_ping"]
        )
    ).map("".join),
)  # fmt: skip
methods = st.one_of(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]), st.text())


@settings(max_examples=500)
@given(methods, uris)
def test_classify_never_raises(method: str, uri: str) -> None:
    """classify returns an ApiRequest or None for any text."""
    got = classify(method, uri)
    if got is not None:
        assert got.path.startswith("/")
        assert got.method == method


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@settings(max_examples=500)
@given(st.one_of(st.binary(), json_values.map(lambda v: repr(v).encode())))
def test_decode_raises_only_body_error(data: bytes) -> None:
    """decode either returns a value or raises BodyError, for any bytes."""
    with contextlib.suppress(BodyError):
        decode(data)


body_keys = st.sampled_from(
    ["Image", "User", "Volumes", "HostConfig", "hostconfig", "Binds", "Privileged", "Mounts",
     "CapAdd", "Sysctls", "RestartPolicy", "Name", "Driver", "DriverOpts", "Cmd", "Type",
     "Source", "Target", "VolumeOptions", "DriverConfig", "Options", "Init", "MaskedPaths"]
)  # fmt: skip
bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(body_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=500)
@given(st.dictionaries(body_keys, bodies, max_size=6))
def test_body_parsers_raise_only_body_error(body: dict[str, object]) -> None:
    """The body parsers return a model or raise BodyError for any JSON object."""
    data = json.dumps(body).encode()
    for parse in (parse_container_create, parse_volume_create, parse_exec_create):
        with contextlib.suppress(BodyError):
            parse(data)
