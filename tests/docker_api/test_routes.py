"""Route table and classifier: the daemon's gorilla/mux matching, row by row."""

from __future__ import annotations

import pytest

from fixeduser.authz.decision import ALL_CONTAINER_ACTIONS, EXEC_ACTIONS, NETWORK_ATTACH_ACTIONS, OWNED_ACTIONS
from fixeduser.docker_api import OWNER_KINDS, ROUTES, ApiRequest, Route, actions_owned_by, classify
from fixeduser.docker_api.routes import clean_path, parse_query
from fixeduser.policy.vocabulary import actions_for_kind

ID = "4f2b0c2e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"

# (method, raw URI, expected action or None, expected target)
ROWS: list[tuple[str, str, str | None, str | None]] = [
    # system
    ("GET", "/_ping", "system.ping", None),
    ("HEAD", "/_ping", "system.ping", None),
    ("HEAD", "/v1.41/_ping", "system.ping", None),
    ("GET", "/v1.47/info", "system.info", None),
    ("GET", "/version", "system.version", None),
    ("GET", "/events?since=1", "system.events", None),
    ("GET", "/system/df", "system.df", None),
    ("POST", "/auth", "system.auth", None),
    ("OPTIONS", "/containers/x/start", "system.options", None),
    # containers
    ("GET", "/containers/json", "container.list", None),
    ("GET", "/v1.41/containers/json?all=1", "container.list", None),
    ("POST", "/containers/create?name=c1", "container.create", None),
    ("GET", "/containers/c1/json", "container.inspect", "c1"),
    ("GET", "/containers/json/json", "container.inspect", "json"),
    ("GET", "/containers/c1/top", "container.top", "c1"),
    ("GET", "/containers/c1/logs?follow=1", "container.logs", "c1"),
    ("GET", "/containers/c1/changes", "container.changes", "c1"),
    ("GET", "/containers/c1/export", "container.export", "c1"),
    ("GET", "/containers/c1/stats", "container.stats", "c1"),
    ("POST", "/containers/c1/resize?h=1&w=2", "container.resize", "c1"),
    ("POST", "/v1.41/containers/c1/start", "container.start", "c1"),
    ("POST", f"/containers/{ID}/start", "container.start", ID),
    ("POST", "/containers/c1/stop", "container.stop", "c1"),
    ("POST", "/containers/c1/restart", "container.restart", "c1"),
    ("POST", "/containers/c1/kill?signal=KILL", "container.kill", "c1"),
    ("POST", "/containers/c1/update", "container.update", "c1"),
    ("POST", "/containers/c1/rename?name=c2", "container.rename", "c1"),
    ("POST", "/containers/c1/pause", "container.pause", "c1"),
    ("POST", "/containers/c1/unpause", "container.unpause", "c1"),
    ("POST", "/containers/c1/attach?stream=1", "container.attach", "c1"),
    ("GET", "/containers/c1/attach/ws", "container.attach.ws", "c1"),
    ("POST", "/containers/c1/wait", "container.wait", "c1"),
    ("DELETE", "/containers/c1?force=1", "container.remove", "c1"),
    ("HEAD", "/containers/c1/archive?path=/", "container.archive.head", "c1"),
    ("GET", "/containers/c1/archive?path=/", "container.archive.get", "c1"),
    ("PUT", "/containers/c1/archive?path=/", "container.archive.put", "c1"),
    ("POST", "/containers/prune", "container.prune", None),
    ("POST", "/commit?container=c1&repo=img", "container.commit", "c1"),
    ("POST", "/commit", "container.commit", None),
    # names that look like other routes
    ("POST", "/containers/auth/start", "container.start", "auth"),
    ("POST", "/containers/json/start", "container.start", "json"),
    ("POST", "/containers/create/start", "container.start", "create"),
    ("POST", "/containers/prune/kill", "container.kill", "prune"),
    ("DELETE", "/containers/json", "container.remove", "json"),
    ("POST", "/containers/a/kill/start", "container.start", "a/kill"),
    # percent-encoding, cleaning, version prefix
    ("POST", "/containers/c%31/start", "container.start", "c1"),
    ("POST", "/v1.41/containers/%61uth/start", "container.start", "auth"),
    ("POST", "/v1.41//containers/x/start", "container.start", "x"),
    ("POST", "//containers/x/start", "container.start", "x"),
    ("POST", "/containers/x/../y/start", "container.start", "y"),
    ("POST", "/containers/x/./start", "container.start", "x"),
    ("POST", "/containers/x%2F..%2Fy/start", "container.start", "y"),
    ("POST", "/v1.41/../containers/x/start", "container.start", "x"),
    ("POST", "/../../containers/x/start", "container.start", "x"),
    ("GET", "/v1.41.1/info", "system.info", None),
    ("GET", "http://docker:2376/v1.41/containers/json", "container.list", None),
    ("POST", "/containers/x%zz/start", None, None),
    ("POST", "/containers/x%/start", None, None),
    ("POST", "/containers/%ff/start", None, None),
    ("POST", "/containers/a\nb/start", None, None),
    ("GET", "/v1.41/v1.41/containers/json", None, None),
    ("GET", "/va/containers/json", None, None),
    ("GET", "*", None, None),
    ("GET", "containers/json", None, None),
    # exec
    ("POST", "/containers/c1/exec", "exec.create", "c1"),
    ("POST", f"/exec/{ID}/start", "exec.start", ID),
    ("POST", f"/exec/{ID}/resize", "exec.resize", ID),
    ("GET", f"/v1.41/exec/{ID}/json", "exec.inspect", ID),
    # images: names contain slashes, tags and digests
    ("GET", "/images/json", "image.list", None),
    ("GET", "/images/library/busybox:latest/json", "image.inspect", "library/busybox:latest"),
    ("GET", "/images/registry:5000/a/b:1/json", "image.inspect", "registry:5000/a/b:1"),
    ("GET", "/images/library%2Fbusybox/json", "image.inspect", "library/busybox"),
    ("GET", "/images/json/json", "image.inspect", "json"),
    ("GET", "/images/busybox/history", "image.history", "busybox"),
    ("POST", "/images/quay.io/org/img/push?tag=v1", "image.push", "quay.io/org/img"),
    ("POST", "/images/busybox:local/tag?repo=x", "image.tag", "busybox:local"),
    ("DELETE", "/images/library/busybox:latest", "image.remove", "library/busybox:latest"),
    ("DELETE", "/images/sha256:abc", "image.remove", "sha256:abc"),
    ("GET", "/images/search?term=x", "image.search", None),
    ("POST", "/images/prune", "image.prune", None),
    ("GET", "/images/a/b/get", "image.get", "a/b"),
    ("GET", "/images/get?names=a", "image.get.many", None),
    ("POST", "/images/load", "image.load", None),
    ("POST", "/images/create?fromImage=busybox", "image.create", None),
    ("POST", "/images/create/push", "image.push", "create"),
    ("POST", "/build", "image.build", None),
    ("POST", "/build/prune", "build.prune", None),
    ("POST", "/build/cancel?id=x", "build.cancel", None),
    (
        "GET",
        "/distribution/docker.io/library/busybox/json",
        "distribution.inspect",
        "docker.io/library/busybox",
    ),
    # volumes
    ("GET", "/volumes", "volume.list", None),
    ("POST", "/volumes/create", "volume.create", None),
    ("GET", "/volumes/v1", "volume.inspect", "v1"),
    ("GET", "/volumes/create", "volume.inspect", "create"),
    ("PUT", "/volumes/v1?version=3", "volume.update", "v1"),
    ("DELETE", "/volumes/v1", "volume.remove", "v1"),
    ("POST", "/volumes/prune", "volume.prune", None),
    # networks
    ("GET", "/networks", "network.list", None),
    ("GET", "/networks/", "network.list", None),
    ("GET", "/networks/n1", "network.inspect", "n1"),
    ("POST", "/networks/create", "network.create", None),
    ("POST", "/networks/n1/connect", "network.connect", "n1"),
    ("POST", "/networks/n1/disconnect", "network.disconnect", "n1"),
    ("DELETE", "/networks/n1", "network.remove", "n1"),
    ("POST", "/networks/prune", "network.prune", None),
    # plugins
    ("GET", "/plugins", "plugin.list", None),
    ("GET", "/plugins/privileges?remote=x", "plugin.privileges", None),
    ("POST", "/plugins/pull?remote=vieux/sshfs", "plugin.pull", None),
    ("GET", "/plugins/vieux/sshfs:latest/json", "plugin.inspect", "vieux/sshfs:latest"),
    ("DELETE", "/plugins/vieux/sshfs", "plugin.remove", "vieux/sshfs"),
    ("POST", "/plugins/p/enable", "plugin.enable", "p"),
    ("POST", "/plugins/p/disable", "plugin.disable", "p"),
    ("POST", "/plugins/p/upgrade", "plugin.upgrade", "p"),
    ("POST", "/plugins/create?name=p", "plugin.create", None),
    ("POST", "/plugins/p/push", "plugin.push", "p"),
    ("POST", "/plugins/p/set", "plugin.set", "p"),
    # swarm
    ("GET", "/swarm", "swarm.inspect", None),
    ("POST", "/swarm/init", "swarm.init", None),
    ("POST", "/swarm/join", "swarm.join", None),
    ("POST", "/swarm/leave", "swarm.leave", None),
    ("POST", "/swarm/update", "swarm.update", None),
    ("GET", "/swarm/unlockkey", "swarm.unlockkey", None),
    ("POST", "/swarm/unlock", "swarm.unlock", None),
    ("GET", "/nodes", "node.list", None),
    ("GET", "/nodes/n1", "node.inspect", "n1"),
    ("DELETE", "/nodes/n1", "node.remove", "n1"),
    ("POST", "/nodes/n1/update", "node.update", "n1"),
    ("GET", "/services", "service.list", None),
    ("POST", "/services/create", "service.create", None),
    ("GET", "/services/s1", "service.inspect", "s1"),
    ("DELETE", "/services/s1", "service.remove", "s1"),
    ("POST", "/services/s1/update", "service.update", "s1"),
    ("GET", "/services/s1/logs", "service.logs", "s1"),
    ("GET", "/services/a/b", None, None),
    ("GET", "/tasks", "task.list", None),
    ("GET", "/tasks/t1", "task.inspect", "t1"),
    ("GET", "/tasks/t1/logs", "task.logs", "t1"),
    ("GET", "/secrets", "secret.list", None),
    ("POST", "/secrets/create", "secret.create", None),
    ("GET", "/secrets/s1", "secret.inspect", "s1"),
    ("DELETE", "/secrets/s1", "secret.remove", "s1"),
    ("POST", "/secrets/s1/update", "secret.update", "s1"),
    ("GET", "/configs", "config.list", None),
    ("POST", "/configs/create", "config.create", None),
    ("GET", "/configs/c1", "config.inspect", "c1"),
    ("DELETE", "/configs/c1", "config.remove", "c1"),
    ("POST", "/configs/c1/update", "config.update", "c1"),
    # session, grpc, checkpoints
    ("POST", "/session", "session.start", None),
    ("POST", "/grpc", "grpc.start", None),
    ("GET", "/containers/c1/checkpoints", "checkpoint.list", "c1"),
    ("POST", "/containers/c1/checkpoints", "checkpoint.create", "c1"),
    ("DELETE", "/containers/c1/checkpoints/cp1", "checkpoint.remove", "c1"),
    # wrong method, case of method, unknown and trailing-slash routes
    ("GET", "/containers/c1/start", None, None),
    ("post", "/containers/c1/start", None, None),
    ("HEAD", "/info", None, None),
    ("HEAD", "/containers/json", None, None),
    ("PUT", "/containers/create", None, None),
    ("GET", "/containers/json/", None, None),
    ("GET", "/nope", None, None),
    ("GET", "/", None, None),
    ("POST", "/containers/c1/copy", None, None),
]


@pytest.mark.parametrize(("method", "uri", "action", "target"), ROWS)
def test_classify_table(method: str, uri: str, action: str | None, target: str | None) -> None:
    """Each row classifies to the daemon's handler and the object it acts on."""
    got = classify(method, uri)
    if action is None:
        assert got is None
    else:
        assert got is not None
        assert (got.action, got.target) == (action, target)


def test_table_has_enough_rows() -> None:
    """The table covers at least 80 requests and every action in ROUTES."""
    assert len(ROWS) >= 80
    covered = {row[2] for row in ROWS}
    assert {r.action for r in ROUTES} <= covered


def test_version_and_path() -> None:
    """The version prefix is reported separately and removed from the cleaned path."""
    got = classify("POST", "/v1.41//containers/c%31/../c2/start?x=1")
    assert got == ApiRequest(
        method="POST",
        action="container.start",
        target="c2",
        path="/containers/c2/start",
        query={"x": ["1"]},
        api_version="1.41",
    )
    unversioned = classify("GET", "/info")
    assert unversioned is not None
    assert unversioned.api_version is None


def test_query_parsing() -> None:
    """Queries decode like Go's url.ParseQuery: JSON filters, blanks, '+', repeats."""
    got = classify("GET", "/containers/json?all=1&filters=%7B%22volume%22%3A%5B%22v1%22%5D%7D&size=")
    assert got is not None
    assert got.query == {"all": ["1"], "filters": ['{"volume":["v1"]}'], "size": [""]}
    assert parse_query("a=1&a=2&b&c=x+y&&d=%41") == {
        "a": ["1", "2"],
        "b": [""],
        "c": ["x y"],
        "d": ["A"],
    }


def test_query_drops_pairs_go_rejects() -> None:
    """Pairs with ';' or a bad escape are dropped, as Go's ParseQuery does."""
    assert parse_query("a=1;b=2&c=%zz&d=4&e=%ff") == {"d": ["4"], "e": ["\ufffd"]}


def test_commit_target_is_first_container_value() -> None:
    """POST /commit targets the first ``container`` query value, like r.Form.Get."""
    got = classify("POST", "/commit?container=a&container=b")
    assert got is not None
    assert got.target == "a"


def test_path_without_version_prefix_keeps_path() -> None:
    """A path that merely starts with 'v' is not mistaken for a version prefix."""
    got = classify("GET", "/version")
    assert got is not None
    assert (got.action, got.path, got.api_version) == ("system.version", "/version", None)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("", "/"),
        ("/", "/"),
        ("//a//b/", "/a/b/"),
        ("/a/./b/../c", "/a/c"),
        ("/../a", "/a"),
        ("/a/..", "/"),
        ("/a/../", "/"),
    ],
)
def test_clean_path(raw: str, cleaned: str) -> None:
    """clean_path is Go's path.Clean keeping a trailing slash, as mux does."""
    assert clean_path(raw) == cleaned


def test_head_routes_only_where_daemon_has_them() -> None:
    """Only /_ping and the container archive have HEAD routes."""
    heads = {r.pattern for r in ROUTES if r.method == "HEAD"}
    assert heads == {"/_ping", "/containers/{name:.*}/archive"}


# Path prefixes whose target variable names an object that belongs to someone.
OWNED_PREFIXES = {"/containers/{": "container", "/exec/{": "exec", "/services/{": "service", "/tasks/{": "task"}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.pattern}")
def test_every_route_on_someones_object_says_whose(route: Route) -> None:
    """A route that names a container, exec, service or task acts on that owner's object: the table says so, so a
    route added without an owner kind fails here (and the authorizer and the policy vocabulary read the table)."""
    expected = next((kind for prefix, kind in OWNED_PREFIXES.items() if route.pattern.startswith(prefix)), None)
    if route.action in ("container.commit",):
        expected = "container"  # its container is a query parameter
    elif route.action in ("network.connect", "network.disconnect"):
        expected = "container in body"
    elif route.action == "container.prune":
        expected = "everyone's containers"
    assert route.owner == expected
    assert route.owner is None or route.owner in OWNER_KINDS


def test_owned_actions_come_from_the_table() -> None:
    """The authorizer's owner checks and the `others` vocabulary are the table's lists, checkpoints included."""
    assert {"checkpoint.create", "checkpoint.remove", "checkpoint.list", "container.commit"} <= OWNED_ACTIONS
    assert actions_for_kind("others") == frozenset(r.action for r in ROUTES if r.owner)
    assert {"container.prune"} == ALL_CONTAINER_ACTIONS
    assert {"exec.start", "exec.resize", "exec.inspect"} == EXEC_ACTIONS
    assert {"network.connect", "network.disconnect"} == NETWORK_ATTACH_ACTIONS
    with pytest.raises(ValueError, match="no owner kind"):
        actions_owned_by("volume")
