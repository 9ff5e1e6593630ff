"""The Docker Engine API routes (v1.41-1.47) as data, and a classifier that matches them like
the daemon's gorilla/mux router does.

Daemon behaviour mirrored here:

* routes are tried in the daemon's registration order, each first with the ``/v{version}``
  prefix (version ``[0-9.]+``) and then without; method and path must both match;
* a path template variable is ``[^/]+`` unless it gives its own pattern (most daemon
  routes use ``{name:.*}``, so a container or image "name" may contain slashes);
* matching runs on the percent-decoded, cleaned path (mux answers an uncleaned path with a
  redirect to the cleaned one instead of running a handler);
* the query string is parsed like Go's ``url.ParseQuery`` (pairs with ';' or a bad escape are
  dropped, blank values kept, '+' is a space).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict

from fixeduser.docker_api.gojson import GO_REPLACE

__all__ = [
    "OWNER_KINDS",
    "ROUTES",
    "ApiRequest",
    "Route",
    "actions_owned_by",
    "classify",
    "clean_path",
    "parse_query",
    "request_path",
]


class Route(NamedTuple):
    """One daemon route: ``target`` names the path variable (or ``?param`` for a query
    parameter) that identifies the object acted on; None when there is none. ``owner`` says whose
    object the route acts on, so that only its owner (or a subject granted ``others``) may: one of
    OWNER_KINDS, or None for routes on nobody's object in particular."""

    method: str
    pattern: str
    action: str
    target: str | None
    owner: str | None = None


# A container, exec instance, swarm service or task (by the target); the container named in the body
# (network connect/disconnect); or every user's containers at once (prune).
OWNER_KINDS: Final = ("container", "exec", "service", "task", "container in body", "everyone's containers")


class ApiRequest(BaseModel):
    """A classified Docker API request."""

    model_config = ConfigDict(frozen=True)

    method: str
    action: str
    target: str | None
    path: str
    query: dict[str, list[str]]
    api_version: str | None


def _r(method: str, pattern: str, action: str, owner: str | None = None) -> Route:
    """A route; one whose path names a container (`/containers/{name...}`) acts on that container."""
    var = re.search(r"\{(\w+)", pattern)
    if owner is None and pattern.startswith("/containers/{"):
        owner = "container"
    return Route(method, pattern, action, var.group(1) if var else None, owner)


def actions_owned_by(kind: str) -> frozenset[str]:
    """The actions of the routes that act on one kind of owned object (OWNER_KINDS)."""
    if kind not in OWNER_KINDS:
        raise ValueError(f"no owner kind {kind!r}")
    return frozenset(route.action for route in ROUTES if route.owner == kind)


_C = "/containers/{name:.*}"
_I = "/images/{name:.*}"
_P = "/plugins/{name:.*}"

ROUTES: Final[tuple[Route, ...]] = (
    # checkpoint router: registered first "or the DELETE gets masked" (experimental)
    _r("GET", f"{_C}/checkpoints", "checkpoint.list"),
    _r("POST", f"{_C}/checkpoints", "checkpoint.create"),
    _r("DELETE", "/containers/{name}/checkpoints/{checkpoint}", "checkpoint.remove"),
    # container router
    _r("HEAD", f"{_C}/archive", "container.archive.head"),
    _r("GET", "/containers/json", "container.list"),
    _r("GET", f"{_C}/export", "container.export"),
    _r("GET", f"{_C}/changes", "container.changes"),
    _r("GET", f"{_C}/json", "container.inspect"),
    _r("GET", f"{_C}/top", "container.top"),
    _r("GET", f"{_C}/logs", "container.logs"),
    _r("GET", f"{_C}/stats", "container.stats"),
    _r("GET", f"{_C}/attach/ws", "container.attach.ws"),
    _r("GET", "/exec/{id:.*}/json", "exec.inspect", "exec"),
    _r("GET", f"{_C}/archive", "container.archive.get"),
    _r("POST", "/containers/create", "container.create"),
    _r("POST", f"{_C}/kill", "container.kill"),
    _r("POST", f"{_C}/pause", "container.pause"),
    _r("POST", f"{_C}/unpause", "container.unpause"),
    _r("POST", f"{_C}/restart", "container.restart"),
    _r("POST", f"{_C}/start", "container.start"),
    _r("POST", f"{_C}/stop", "container.stop"),
    _r("POST", f"{_C}/wait", "container.wait"),
    _r("POST", f"{_C}/resize", "container.resize"),
    _r("POST", f"{_C}/attach", "container.attach"),
    _r("POST", f"{_C}/exec", "exec.create"),
    _r("POST", "/exec/{name:.*}/start", "exec.start", "exec"),
    _r("POST", "/exec/{name:.*}/resize", "exec.resize", "exec"),
    _r("POST", f"{_C}/rename", "container.rename"),
    _r("POST", f"{_C}/update", "container.update"),
    _r("POST", "/containers/prune", "container.prune", "everyone's containers"),
    Route("POST", "/commit", "container.commit", "?container", "container"),
    _r("PUT", f"{_C}/archive", "container.archive.put"),
    _r("DELETE", _C, "container.remove"),
    # image router
    _r("GET", "/images/json", "image.list"),
    _r("GET", "/images/search", "image.search"),
    _r("GET", "/images/get", "image.get.many"),
    _r("GET", f"{_I}/get", "image.get"),
    _r("GET", f"{_I}/history", "image.history"),
    _r("GET", f"{_I}/json", "image.inspect"),
    _r("POST", "/images/load", "image.load"),
    _r("POST", "/images/create", "image.create"),
    _r("POST", f"{_I}/push", "image.push"),
    _r("POST", f"{_I}/tag", "image.tag"),
    _r("POST", "/images/prune", "image.prune"),
    _r("DELETE", _I, "image.remove"),
    # system router
    Route("OPTIONS", "/{anyroute:.*}", "system.options", None),
    _r("GET", "/_ping", "system.ping"),
    _r("HEAD", "/_ping", "system.ping"),
    _r("GET", "/events", "system.events"),
    _r("GET", "/info", "system.info"),
    _r("GET", "/version", "system.version"),
    _r("GET", "/system/df", "system.df"),
    _r("POST", "/auth", "system.auth"),
    # volume router
    _r("GET", "/volumes", "volume.list"),
    _r("GET", "/volumes/{name:.*}", "volume.inspect"),
    _r("POST", "/volumes/create", "volume.create"),
    _r("POST", "/volumes/prune", "volume.prune"),
    _r("PUT", "/volumes/{name:.*}", "volume.update"),
    _r("DELETE", "/volumes/{name:.*}", "volume.remove"),
    # build and session routers
    _r("POST", "/build", "image.build"),
    _r("POST", "/build/prune", "build.prune"),
    _r("POST", "/build/cancel", "build.cancel"),
    _r("POST", "/session", "session.start"),
    # swarm router
    _r("POST", "/swarm/init", "swarm.init"),
    _r("POST", "/swarm/join", "swarm.join"),
    _r("POST", "/swarm/leave", "swarm.leave"),
    _r("GET", "/swarm", "swarm.inspect"),
    _r("GET", "/swarm/unlockkey", "swarm.unlockkey"),
    _r("POST", "/swarm/update", "swarm.update"),
    _r("POST", "/swarm/unlock", "swarm.unlock"),
    _r("GET", "/services", "service.list"),
    _r("GET", "/services/{id}", "service.inspect", "service"),
    _r("POST", "/services/create", "service.create"),
    _r("POST", "/services/{id}/update", "service.update", "service"),
    _r("DELETE", "/services/{id}", "service.remove", "service"),
    _r("GET", "/services/{id}/logs", "service.logs", "service"),
    _r("GET", "/nodes", "node.list"),
    _r("GET", "/nodes/{id}", "node.inspect"),
    _r("DELETE", "/nodes/{id}", "node.remove"),
    _r("POST", "/nodes/{id}/update", "node.update"),
    _r("GET", "/tasks", "task.list"),
    _r("GET", "/tasks/{id}", "task.inspect", "task"),  # shows its service's spec (Env...)
    _r("GET", "/tasks/{id}/logs", "task.logs", "task"),
    _r("GET", "/secrets", "secret.list"),
    _r("POST", "/secrets/create", "secret.create"),
    _r("DELETE", "/secrets/{id}", "secret.remove"),
    _r("GET", "/secrets/{id}", "secret.inspect"),
    _r("POST", "/secrets/{id}/update", "secret.update"),
    _r("GET", "/configs", "config.list"),
    _r("POST", "/configs/create", "config.create"),
    _r("DELETE", "/configs/{id}", "config.remove"),
    _r("GET", "/configs/{id}", "config.inspect"),
    _r("POST", "/configs/{id}/update", "config.update"),
    # plugin router
    _r("GET", "/plugins", "plugin.list"),
    _r("GET", f"{_P}/json", "plugin.inspect"),
    _r("GET", "/plugins/privileges", "plugin.privileges"),
    _r("DELETE", _P, "plugin.remove"),
    _r("POST", f"{_P}/enable", "plugin.enable"),
    _r("POST", f"{_P}/disable", "plugin.disable"),
    _r("POST", "/plugins/pull", "plugin.pull"),
    _r("POST", f"{_P}/push", "plugin.push"),
    _r("POST", f"{_P}/upgrade", "plugin.upgrade"),
    _r("POST", f"{_P}/set", "plugin.set"),
    _r("POST", "/plugins/create", "plugin.create"),
    # distribution, grpc and network routers
    _r("GET", "/distribution/{name:.*}/json", "distribution.inspect"),
    _r("POST", "/grpc", "grpc.start"),
    _r("GET", "/networks", "network.list"),
    _r("GET", "/networks/", "network.list"),
    _r("GET", "/networks/{id:.+}", "network.inspect"),
    _r("POST", "/networks/create", "network.create"),
    _r("POST", "/networks/{id:.*}/connect", "network.connect", "container in body"),
    _r("POST", "/networks/{id:.*}/disconnect", "network.disconnect", "container in body"),
    _r("POST", "/networks/prune", "network.prune"),
    _r("DELETE", "/networks/{id:.*}", "network.remove"),
)

_VAR: Final = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


def _template_regex(template: str) -> str:
    out, pos = [], 0
    for m in _VAR.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


_COMPILED: Final = tuple(
    (
        route,
        re.compile(r"/v(?P<_version>[0-9.]+)" + _template_regex(route.pattern)),
        re.compile(_template_regex(route.pattern)),
    )
    for route in ROUTES
)

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CTL_OR_SPACE: Final = re.compile(r"[\x00-\x20\x7f]")


def _unescape(s: str, *, query: bool) -> str | None:
    """Go's url unescape; None for a bad escape.

    A path with invalid UTF-8 is also None (no Docker object name contains it, and two such
    names must not collapse into one); in a query it becomes U+FFFD like a JSON body.
    """
    if _BAD_ESCAPE.search(s):
        return None
    if query:
        return unquote_to_bytes(s.replace("+", " ")).decode("utf-8", errors=GO_REPLACE)
    try:
        return unquote_to_bytes(s).decode("utf-8")
    except UnicodeDecodeError:
        return None


# The same routes in the same (daemon) order, only those of one method at a time.
_COMPILED_BY_METHOD: dict[str, tuple[tuple[Route, re.Pattern[str], re.Pattern[str]], ...]] = {
    method: tuple(entry for entry in _COMPILED if entry[0].method == method)
    for method in {entry[0].method for entry in _COMPILED}
}


def clean_path(p: str) -> str:
    """gorilla/mux ``cleanPath``: Go's ``path.Clean`` keeping a trailing slash."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    cleaned = "/" + "/".join(parts)
    if p.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def parse_query(raw: str) -> dict[str, list[str]]:
    """Go's ``url.ParseQuery``, dropping the pairs it reports errors for."""
    out: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        k = _unescape(key, query=True)
        v = _unescape(value, query=True)
        if k is None or v is None:
            continue
        out.setdefault(k, []).append(v)
    return out


def _split_request_uri(raw_uri: str) -> tuple[str, str] | None:
    """(raw path, raw query) of an HTTP request-target, as Go's ParseRequestURI splits it."""
    if _CTL_OR_SPACE.search(raw_uri):
        return None
    if not raw_uri.startswith("/"):
        scheme = _SCHEME.match(raw_uri)
        if scheme is None:
            return None
        rest = raw_uri[scheme.end() :]
        if not rest.startswith("//"):
            return None  # opaque URI: empty path, which mux only redirects
        slash = [i for i in (rest.find("/", 2), rest.find("?", 2)) if i >= 0]
        raw_uri = rest[min(slash) :] if slash else ""
        if not raw_uri.startswith("/"):
            return None
    path, _, query = raw_uri.partition("?")
    return path, query


def request_path(raw_uri: str) -> str | None:
    """The percent-decoded, cleaned path the router matches; None if no route could match it."""
    parts = _split_request_uri(raw_uri)
    if parts is None:
        return None
    decoded = _unescape(parts[0], query=False)
    return None if decoded is None else clean_path(decoded)


CACHED_URI_LENGTH = 2048  # longer URIs are classified afresh: a cache of user input must stay small


def classify(method: str, raw_uri: str) -> ApiRequest | None:
    """Classify a request by its method and raw request URI; None if no daemon route runs it.

    Cached for URIs of ordinary length: the answer depends on nothing else, and the docker CLI
    repeats the same URIs (`/_ping`, `/containers/json`, ...). Callers must treat the result as
    read-only.
    """
    if len(raw_uri) <= CACHED_URI_LENGTH:
        return _classify_cached(method, raw_uri)
    return _classify(method, raw_uri)


def _classify(method: str, raw_uri: str) -> ApiRequest | None:
    parts = _split_request_uri(raw_uri)
    if parts is None:
        return None
    decoded = _unescape(parts[0], query=False)
    if decoded is None:
        return None
    path = clean_path(decoded)
    for route, versioned, plain in _COMPILED_BY_METHOD.get(method, ()):
        m = versioned.fullmatch(path) or plain.fullmatch(path)
        if m is None:
            continue
        groups = m.groupdict()
        version = groups.pop("_version", None)
        query = parse_query(parts[1])
        target: str | None = None
        if route.target is not None and route.target.startswith("?"):
            values = query.get(route.target[1:])
            target = values[0] if values else None
        elif route.target is not None:
            target = groups[route.target]
        bare = path[len(version) + 2 :] if version is not None else path
        return ApiRequest(
            method=method,
            action=route.action,
            target=target,
            path=bare,
            query=query,
            api_version=version,
        )
    return None


_classify_cached = lru_cache(maxsize=8192)(_classify)
