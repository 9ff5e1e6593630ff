"""Whether the daemon showed a request's body to the plugin, and the body a container start may carry.

The daemon forwards a request body to authorization plugins only when its Content-Type is
``application/json`` and it is shorter than 1 MiB (20.10 measured: a larger body, sent with a
Content-Length or chunked, is not forwarded and the request still runs). Go's HTTP server keeps
a ``Content-Length`` header in the headers the plugin sees, but for a chunked body it removes both
``Content-Length`` and ``Transfer-Encoding`` (measured). So with no body shown:

* ``Content-Length: 0``: there is no body;
* ``Content-Length: N`` (N > 0): there is a body the plugin was not shown;
* no ``Content-Length``: a chunked body that was not shown, or a client that sent none without
  saying so. The plugin cannot tell which, so where it must read the body it denies.
"""

from __future__ import annotations

from typing import Final, Literal

from fixeduser.docker_api.gojson import BodyError, JsonObject, decode

__all__ = ["BODY_READ_ACTIONS", "BodyPresence", "body_presence", "check_start_body", "hidden_body_reason"]

BodyPresence = Literal["none", "shown", "hidden"]

# Requests whose body the plugin reads to decide (or to record what the daemon will do later):
# when the daemon did not show the body, the request is denied.
BODY_READ_ACTIONS: Final = frozenset(
    {
        "container.create",
        "container.start",  # must be empty (API < 1.24 daemons apply a HostConfig sent here)
        "container.update",  # its RestartPolicy makes the daemon start the container unasked
        "exec.create",
        "volume.create",
        "network.connect",
        "network.disconnect",
        "service.create",
        "service.update",
    }
)

_JSON_SPACE: Final = b" \t\r\n"  # Go's encoding/json whitespace (not \v or \f)


def body_presence(shown: bool, content_length: str | None) -> BodyPresence:
    """`shown`: the AuthZ request carried a RequestBody; `content_length`: its Content-Length header."""
    if shown:
        return "shown"
    if content_length is not None and content_length.strip(" \t").isdigit() and int(content_length) == 0:
        return "none"
    return "hidden"


def hidden_body_reason(content_length: str | None) -> str:
    """Why the plugin saw no body although there may be one, in words for a denial."""
    if content_length is None:
        return (
            "the request has no Content-Length, and a chunked body over 1 MiB is not forwarded "
            "(send Content-Length: 0 for no body)"
        )
    return (
        f"the request has a {content_length.strip()}-byte body, and the daemon forwards only "
        "application/json bodies under 1 MiB"
    )


def check_start_body(body: bytes) -> None:
    """Accept only an empty body for ``POST /containers/{id}/start``; BodyError otherwise.

    Empty means: nothing, JSON whitespace, ``null``, or an object with no members (``{}``,
    ``{ }``). Anything else, ``{"HostConfig": {}}`` included, is refused rather than interpreted:
    API < 1.24 daemons decode the body as a HostConfig (top-level fields too), newer ones
    refuse bodies over 7 bytes, and no current client sends one.
    """
    if not body.strip(_JSON_SPACE):
        return
    value = decode(body)
    if value is None or (isinstance(value, JsonObject) and not value.pairs):
        return
    raise BodyError("a container start takes no body (API < 1.24 daemons apply a HostConfig sent here)")
