"""Whether the plugin was shown a request's body, and which container start bodies are empty."""

from __future__ import annotations

import pytest

from fixeduser.docker_api import BodyError, body_presence, check_start_body, hidden_body_reason


@pytest.mark.parametrize(
    ("shown", "content_length", "presence"),
    [
        (True, "17", "shown"),
        (True, None, "shown"),  # a chunked body under 1 MiB is shown without a Content-Length
        (False, "0", "none"),
        (False, "00", "none"),
        (False, " 0 ", "none"),
        (False, "28", "hidden"),  # a text/plain body
        (False, "1048626", "hidden"),  # a JSON body over 1 MiB
        (False, None, "hidden"),  # chunked over 1 MiB: Go drops both Content-Length and Transfer-Encoding
        (False, "", "hidden"),
        (False, "-1", "hidden"),
        (False, "0x0", "hidden"),
    ],
)
def test_body_presence(shown: bool, content_length: str | None, presence: str) -> None:
    assert body_presence(shown, content_length) == presence


def test_hidden_body_reasons_say_why() -> None:
    assert "chunked" in hidden_body_reason(None) and "Content-Length: 0" in hidden_body_reason(None)
    assert "28-byte body" in hidden_body_reason("28") and "under 1 MiB" in hidden_body_reason("28")


@pytest.mark.parametrize("body", [b"", b" ", b"\r\n\t ", b"{}", b" { } \n", b"null", b" null ", b"{\n}"])
def test_empty_start_bodies(body: bytes) -> None:
    check_start_body(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"HostConfig":{}}',
        b'{"hostconfig":{"Binds":["/:/host"]}}',
        b'{"Binds":["/:/host"]}',  # API < 1.24 reads HostConfig fields at the top level too
        b'{"Privileged":true}',
        b'{"":0}',
        b'{"a":1}',  # 7 bytes: a 1.24+ daemon ignores it, but it is not empty
        b"[]",
        b'""',
        b"0",
        b"false",
        b"{} {}",
        b"{",
        b"\x0b{}",  # \v is not JSON whitespace
        b"\xef\xbb\xbf{}",  # a BOM is not JSON
        b"nul",
    ],
)
def test_non_empty_start_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(BodyError):
        check_start_body(body)
