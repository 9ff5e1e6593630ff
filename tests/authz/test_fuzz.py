"""Property tests: arbitrary and adversarial requests never make the decision raise, and never get
allowed where a small, independent reference check says a request must be denied.

The reference reads bodies with its own code (json pairs, Unicode casefold for Go's key folding,
last-wins per key, null resets) and knows only a few facts: engineers hold no escalation grant,
dave holds nothing, policy subject names cannot log in, and plugin/swarm control is not theirs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixeduser.authz.api import authz_handlers
from fixeduser.authz.wire import AuthZRequest
from fixeduser.docker_api.daemon import DaemonClient
from fixeduser.sandbox import Dockerd

from .conftest import make_harness

ENGINEERS = {"alice", "bob", "carol"}
USERS = ["alice", "bob", "carol", "dave", "", "@local", "role:eng", "role:admin"]

# ---- the reference ------------------------------------------------------------------------------


def _fold(key: str) -> str:
    return key.casefold()


def _last(pairs: list[tuple[str, Any]], name: str) -> tuple[bool, Any]:
    """(present, value) of the last non-null occurrence of field `name` (Go: null is a no-op)."""
    found, value = False, None
    for key, item in pairs:
        if _fold(key) == _fold(name) and item is not None:
            found, value = True, item
    return found, value


def _final(pairs: list[tuple[str, Any]], name: str) -> tuple[bool, Any]:
    """(present, value) of the last occurrence, null included (Go: null resets a slice or map)."""
    values = [item for key, item in pairs if _fold(key) == _fold(name)]
    return (bool(values) and values[-1] is not None), (values[-1] if values else None)


def _merged(pairs: list[tuple[str, Any]], name: str) -> list[tuple[str, Any]] | None:
    """A pointer-to-struct field: repeated objects merge, null resets; None when unset."""
    out: list[tuple[str, Any]] | None = None
    for key, item in pairs:
        if _fold(key) != _fold(name):
            continue
        if item is None:
            out = None
        elif isinstance(item, Obj):
            out = [*(out or []), *item]
        else:
            return [("__invalid__", True)]
    return out


class Obj(list[tuple[str, Any]]):
    """A JSON object as the reference reads it: every key/value pair in order."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> Obj:
    return Obj(pairs)


def _dangerous_host(hc: list[tuple[str, Any]]) -> bool:  # noqa: PLR0911, PLR0912 - a flat list of rules reads best
    if any(key == "__invalid__" for key, _ in hc):
        return True
    for name in ("Privileged",):
        present, value = _last(hc, name)
        if present and value is not False:
            return True
    for name in ("CapAdd", "Capabilities", "Devices", "DeviceCgroupRules", "DeviceRequests", "SecurityOpt",
                 "Sysctls", "VolumesFrom", "Links"):  # fmt: skip
        present, value = _final(hc, name)
        if present and value not in ([], "", 0, False):
            return True
    for name in ("PidMode", "UTSMode", "UsernsMode", "CgroupParent", "Cgroup"):
        present, value = _last(hc, name)
        if present and value != "":
            return True
    for name in ("IpcMode", "NetworkMode", "CgroupnsMode"):
        present, value = _last(hc, name)
        if present and (not isinstance(value, str) or value == "host" or value.startswith("container")):
            return True
    for name in ("MaskedPaths", "ReadonlyPaths"):
        values = [v for k, v in hc if _fold(k) == _fold(name)]
        if values and values[-1] is not None:
            return True  # an explicit list (even empty) replaces the daemon's masking; null resets to default
    present, binds = _final(hc, "Binds")
    if present and (not isinstance(binds, list) or any(not isinstance(b, str) or b.startswith("/") for b in binds)):
        return True
    present, mounts = _final(hc, "Mounts")
    if present:
        if not isinstance(mounts, list):
            return True
        for mount in mounts:
            if not isinstance(mount, Obj):
                return mount is not None
            _, mtype = _last(mount, "Type")
            if mtype not in ("volume", "tmpfs"):
                return True
            if mtype == "volume":
                options = _merged(mount, "VolumeOptions") or []
                config = _merged(options, "DriverConfig") or []
                present, opts = _last(config, "Options")
                if present and opts not in ([], None):
                    return True
    return False


def reference_denies(  # noqa: PLR0911 - one early answer per rule
    user: str, method: str, uri: str, body: bytes | None, content_type: str
) -> bool:
    """True when the request must be denied; False means 'no opinion'."""
    if user.startswith(("@", "role:")):
        return True
    raw_path = uri.split("?", 1)[0]
    path = posixpath.normpath(unquote(raw_path)) if raw_path.startswith("/") else raw_path
    path = re.sub(r"^/v[0-9.]+(?=/)", "", path)
    if user == "dave":
        return path != "/_ping"
    if user not in ENGINEERS:
        return False
    if method in ("POST", "DELETE") and re.match(r"^/(plugins|swarm|nodes)/", path):
        return True
    if method == "POST" and path in ("/containers/create", "/containers/create/"):
        if not body:
            return True  # the daemon did not forward it (not JSON, or over 1 MiB): nothing was checked
        try:
            top = json.loads(body, object_pairs_hook=_pairs_hook)
        except (ValueError, RecursionError):
            return True
        if not isinstance(top, Obj):
            return True
        hc = _merged(top, "HostConfig") or []
        return _dangerous_host(hc) or _dangerous_host(top)
    return False


# ---- strategies ---------------------------------------------------------------------------------


def spellings(name: str) -> st.SearchStrategy[str]:
    """The field name in random case, with s and k sometimes U+017F and U+212A, as Go's folding allows."""

    def spell(flags: list[int]) -> str:
        out = []
        for original, flag in zip(name, flags, strict=False):
            char = original
            if flag == 1:
                char = original.swapcase()
            elif flag == 2 and original.lower() == "s":
                char = "\u017f"
            elif flag == 2 and original.lower() == "k":
                char = "\u212a"
            out.append(char)
        return "".join(out)

    return st.lists(st.integers(0, 2), min_size=len(name), max_size=len(name)).map(spell)


WORDS = ["", "host", "container:bobs", "private", "none", "runc", "/", "/etc:/x", "v:/x", "SYS_ADMIN", "rshared"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(WORDS))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["Type", "Source", "Target", "VolumeOptions", "DriverConfig", "Name", "Options", "device", "o"]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=6,
)
HOST_FIELDS = ["Privileged", "CapAdd", "Capabilities", "Devices", "DeviceCgroupRules", "DeviceRequests", "PidMode",
               "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "NetworkMode", "Cgroup", "SecurityOpt", "Sysctls",
               "Runtime", "CgroupParent", "MaskedPaths", "ReadonlyPaths", "Binds", "Mounts", "VolumesFrom", "Links",
               "Tmpfs", "Memory", "Pr\u0131vileged"]  # fmt: skip
MOUNT = st.fixed_dictionaries(
    {"Type": st.sampled_from(["bind", "volume", "tmpfs", "Bind", "npipe"]), "Source": st.sampled_from(["/", "v", ""]),
     "Target": st.just("/m")},
    optional={"VolumeOptions": st.fixed_dictionaries({"DriverConfig": st.fixed_dictionaries(
        {"Name": st.sampled_from(["", "local", "fixeduser", "other"]),
         "Options": st.sampled_from([{}, {"device": "/"}, None])})})},
)  # fmt: skip


STRINGS = st.sampled_from(WORDS)
STRING_LISTS = st.one_of(st.none(), st.lists(STRINGS, max_size=2))
TYPED: dict[str, st.SearchStrategy[Any]] = {
    "Privileged": st.one_of(st.none(), st.booleans()),
    "Mounts": st.one_of(st.none(), st.lists(MOUNT, max_size=2)),
    "Devices": st.one_of(st.none(), st.lists(st.just({"PathOnHost": "/dev/sda"}), max_size=1)),
    "DeviceRequests": st.one_of(st.none(), st.lists(st.just({"Count": -1}), max_size=1)),
    "Sysctls": st.one_of(st.none(), st.dictionaries(st.sampled_from(["kernel.x", "net.y"]), STRINGS, max_size=1)),
    "Tmpfs": st.one_of(st.none(), st.dictionaries(st.just("/run"), STRINGS, max_size=1)),
    "Memory": st.integers(0, 9),
    **{name: st.one_of(st.none(), STRINGS) for name in ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode",
                                                         "NetworkMode", "Cgroup", "Runtime", "CgroupParent")},
}  # fmt: skip


def host_pair() -> st.SearchStrategy[tuple[str, Any]]:
    def pair(name: str) -> st.SearchStrategy[tuple[str, Any]]:
        typed = TYPED.get(name.replace("\u0131", "i"), STRING_LISTS)
        return st.tuples(spellings(name), st.one_of(typed, typed, typed, VALUES))

    return st.sampled_from(HOST_FIELDS).flatmap(pair)


def render(pairs: list[tuple[str, Any]]) -> str:
    """A JSON object text that keeps duplicate keys (json.dumps cannot)."""
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


@st.composite
def create_bodies(draw: st.DrawFn) -> bytes:
    host = draw(st.lists(host_pair(), max_size=5))
    top: list[tuple[str, Any]] = [("Image", "busybox")]
    for _ in range(draw(st.integers(1, 2))):
        top.append((draw(spellings("HostConfig")), None if draw(st.integers(0, 9)) == 0 else "__HC__"))
    if draw(st.integers(0, 4)) == 0:
        top.append(draw(host_pair()))  # a deprecated top-level HostConfig field
    text = render(top).replace('"__HC__"', render(host))
    cut = None if draw(st.integers(0, 9)) else draw(st.integers(0, len(text)))
    return text[:cut].encode() if cut is not None else text.encode()


PATHS = st.sampled_from([
    "/containers/create", "/v1.41/containers/create", "/v1.99/containers/create/", "/containers/%63reate",
    "/containers/x/../create", "//containers//create", "/containers/create%2F", "/v1.41/containers/bobs/exec",
    "/plugins/fixeduser-authz/disable", "/v1.41/plugins/a%2Fb/disable", "/swarm/init", "/swarm/join",
    "/_ping", "/containers/json", "/volumes/create", "/exec/abc/start", "/nodes/n/update",
    "/containers/bobs/start", "http://h/containers/create", "/CONTAINERS/create", "/containers/create\x00",
])  # fmt: skip
QUERIES = st.sampled_from(["", "?name=c1", "?name=a&name=b", "?x=%zz", "?;name=q"])
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "",
                                 "application/x-www-form-urlencoded", "APPLICATION/JSON"])  # fmt: skip


class Fuzz:
    """One harness on the session's real daemon, driven from sync hypothesis tests on one event loop.

    The DaemonClient's connection belongs to the loop that opened it, so every decision runs on the
    same `asyncio.Runner` instead of a fresh `asyncio.run` loop each.
    """

    def __init__(self, dockerd: Dockerd) -> None:
        self.runner = asyncio.Runner()
        self.client = DaemonClient(dockerd.host)
        self._tmp = Path(tempfile.mkdtemp(prefix="fixeduser-fuzz-"))
        self.harness, self._store = make_harness(self._tmp, self.client)

    def decide(self, request: AuthZRequest) -> bool:
        return self.runner.run(self.harness.authorizer.authorize_request(request)).allow

    def close(self) -> None:
        self.runner.run(self.client.close())
        self.runner.close()
        self._store.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def fuzz(dockerd: Dockerd) -> Iterator[Fuzz]:
    made = Fuzz(dockerd)
    try:
        yield made
    finally:
        made.close()


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    user=st.sampled_from(USERS),
    method=st.sampled_from(["POST", "GET", "DELETE", "PUT", "HEAD", "post"]),
    path=PATHS,
    query=QUERIES,
    body=st.one_of(st.none(), create_bodies(), st.binary(max_size=40)),
    content_type=CONTENT_TYPES,
)
def test_never_allows_what_the_reference_denies(  # noqa: PLR0917 - hypothesis passes each strategy by name
    fuzz: Fuzz, user: str, method: str, path: str, query: str, body: bytes | None, content_type: str
) -> None:
    """Adversarial URIs, headers and create bodies: the decision never raises and never out-allows the reference."""
    uri = path + query
    payload: dict[str, Any] = {"RequestMethod": method, "RequestUri": uri}
    if user:
        payload |= {"User": user, "UserAuthNMethod": "TLS"}
    if body is not None:
        payload["RequestBody"] = base64.b64encode(body).decode()
    if content_type:
        payload["RequestHeaders"] = {"Content-Type": content_type}
    allowed = fuzz.decide(AuthZRequest.from_wire(payload))
    if reference_denies(user, method, uri, body, content_type):
        assert not allowed, (user, method, uri, body, content_type)


CREATE_PATHS = st.sampled_from(["/containers/create", "/v1.41/containers/create", "/containers/%63reate",
                                "/containers/x/../create?name=c1", "//v1.41//containers/./create"])  # fmt: skip


@FUZZ
@given(user=st.sampled_from(sorted(ENGINEERS)), path=CREATE_PATHS, body=create_bodies())
def test_create_bodies_never_out_allowed(fuzz: Fuzz, user: str, path: str, body: bytes) -> None:
    """Engineers' container creates with folded, duplicated, nulled or mistyped fields: no escalation slips."""
    payload = {
        "User": user,
        "RequestMethod": "POST",
        "RequestUri": path,
        "RequestBody": base64.b64encode(body).decode(),
        "RequestHeaders": {"Content-Type": "application/json"},
    }
    allowed = fuzz.decide(AuthZRequest.from_wire(payload))
    if reference_denies(user, "POST", path, body, "application/json"):
        assert not allowed, (user, path, body)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)


@FUZZ
@given(
    payload=st.dictionaries(
        st.sampled_from(
            [
                "User",
                "UserAuthNMethod",
                "RequestMethod",
                "RequestUri",
                "RequestBody",
                "RequestHeaders",
                "ResponseStatusCode",
                "ResponseBody",
                "Other",
            ]
        ),
        st.one_of(JSON, st.text(), st.sampled_from(["POST", "/containers/create", "eyJ9", "!!notb64"])),
    )
)
def test_handler_never_raises_and_denies_garbage(fuzz: Fuzz, payload: dict[str, Any]) -> None:
    """Any JSON payload to AuthZPlugin.AuthZReq gets an answer; one without a known route is a denial."""
    handler = authz_handlers(fuzz.harness.authorizer)["AuthZPlugin.AuthZReq"]
    answer = fuzz.runner.run(handler(payload))
    assert set(answer) == {"Allow", "Msg", "Err"}
    if answer["Allow"]:
        request = AuthZRequest.from_wire(payload)
        from fixeduser.docker_api import classify  # noqa: PLC0415

        assert classify(request.method, request.uri) is not None
        assert not request.user.startswith(("@", "role:"))


def test_reference_is_not_vacuous(fuzz: Fuzz) -> None:
    """The reference denies the attacks it is meant to catch and allows a plain create."""
    plain = b'{"Image": "x", "HostConfig": {"NetworkMode": "none"}}'
    assert not reference_denies("alice", "POST", "/v1.41/containers/create", plain, "application/json")
    assert fuzz.decide(fuzz.harness.request("POST", "/v1.41/containers/create", body=json.loads(plain)))
    attacks = [
        b'{"HostConfig": {"privileged": true}}',
        '{"HostConfig": {"\u017fecurityOpt": ["x"]}}'.encode(),
        b'{"HostConfig": {"Binds": ["/:/h"]}}',
        b'{"hostconfig": null, "HostConfig": {"CapAdd": "X"}}',
    ]
    for body in attacks:
        assert reference_denies("alice", "POST", "/containers/%63reate", body, "application/json")
