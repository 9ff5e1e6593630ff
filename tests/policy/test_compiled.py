from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import casbin  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from fixeduser.policy.compiled import compile_policy
from fixeduser.policy.files import read_policy_dir
from fixeduser.policy.store import PolicyInvalid, load_policy

from .conftest import MODEL, REPO

EXAMPLE = REPO / "policies"


def test_example_policy_is_clean() -> None:
    """The shipped example policy compiles without a single problem."""
    assert compile_policy(read_policy_dir(EXAMPLE)).problems == ()


def test_example_identities() -> None:
    """alice and bob map to their own uids and the shared gid; carol has a role but no identity."""
    policy = load_policy(EXAMPLE)
    alice, bob, carol = (policy.identity(u) for u in ("alice", "bob", "carol"))
    assert alice.identity is not None and (alice.identity.uid, alice.identity.gid) == (10001, 10000)
    assert bob.identity is not None and (bob.identity.uid, bob.identity.gid) == (10002, 10000)
    assert carol.identity is None and carol.error is not None and "no fixed user or group" in carol.error


def test_example_permissions_name_their_rule() -> None:
    """A decision names the file and line that allowed it; a default deny names none."""
    policy = load_policy(EXAMPLE)
    allowed = policy.decide("alice", "volume:eng-data", "mount")
    assert allowed.allowed and allowed.rule is not None
    assert allowed.rule.text == "p, role:eng, volume:eng-*, mount"
    assert allowed.rule.file.endswith("policy.csv") and allowed.rule.line > 0
    denied = policy.decide("alice", "volume:ops-data", "mount")
    assert not denied.allowed and denied.rule is None
    assert policy.decide("@local", "escalation", "privileged").allowed
    assert not policy.decide("dave", "api", "system.ping").allowed


def test_user_line_beats_role_line(policy_dir: Callable[[str], Path]) -> None:
    """An explicit user mapping wins over the mapping of the user's role, field by field."""
    policy = load_policy(policy_dir("g, ann, role:team\np2, role:team, 20000, 20000\np2, ann, 20001, \n"))
    ann = policy.identity("ann").identity
    assert ann is not None and (ann.uid, ann.gid) == (20001, 20000)


def test_roles_that_disagree_are_a_policy_error(policy_dir: Callable[[str], Path]) -> None:
    """Two roles mapping different groups make the user's identity ambiguous: an error that says how to fix it."""
    directory = policy_dir("g, ann, role:a\ng, ann, role:b\np2, role:a, 20001, 20000\np2, role:b, , 30000\n")
    policy = compile_policy(read_policy_dir(directory))
    resolution = policy.identity("ann")
    assert resolution.identity is None and resolution.error is not None
    assert "ambiguous" in resolution.error and "p2, ann, <user>, <group>" in resolution.error
    assert any("ambiguous" in p.message for p in policy.problems)
    try:
        load_policy(directory)
    except PolicyInvalid as exc:
        assert "policy.csv" in str(exc)
    else:
        raise AssertionError("an ambiguous policy must not load")


def test_nested_roles_resolve(policy_dir: Callable[[str], Path]) -> None:
    """Roles of roles grant permissions and identities; cycles do not hang."""
    directory = policy_dir(
        "g, ann, role:a\ng, role:a, role:b\ng, role:b, role:a\np, role:b, api, container.*\np2, role:b, 20001, 20000\n"
    )
    policy = load_policy(directory)
    assert policy.decide("ann", "api", "container.create").allowed
    assert policy.roles("ann") == ("role:a", "role:b")
    assert policy.identity("ann").identity is not None


def test_root_and_unknown_names_are_problems(policy_dir: Callable[[str], Path]) -> None:
    """Root and names the host does not know are reported with file and line."""
    policy = compile_policy(read_policy_dir(policy_dir("p2, ann, 0, 10\np2, bob, no-such-user-xyz, 10\n")))
    messages = [str(p) for p in policy.problems]
    assert any(":1:" in m and "root" in m for m in messages)
    assert any(":2:" in m and "unknown user" in m for m in messages)


def test_malformed_lines_are_located(policy_dir: Callable[[str], Path]) -> None:
    """Wrong field counts, unknown types, quotes and a missing final newline are each reported."""
    text = 'p, ann, api\nq, ann, x, y\np, "ann", api, x\np, ann, api, container.list\ng, ann, role:x'
    policy = compile_policy(read_policy_dir(policy_dir(text)))
    lines = sorted(p.line for p in policy.problems if p.line is not None)
    assert lines == [1, 2, 3, 5]


def test_empty_directory_is_a_problem(tmp_path: Path) -> None:
    """A directory without model or CSV files is never an empty (deny-all or allow-all) policy."""
    policy = compile_policy(read_policy_dir(tmp_path))
    assert len(policy.problems) >= 2


_SUBJECTS = st.sampled_from(["ann", "bob", "role:a", "role:b", "role:c", "@local"])
_OBJECTS = st.sampled_from(["api", "volume:eng-x", "volume:ops", "escalation", "*", "volume:*", "volume:eng-*"])
_ACTIONS = st.sampled_from(["container.create", "container.*", "mount", "create", "*", "privileged", "x"])


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(st.tuples(_SUBJECTS, _OBJECTS, _ACTIONS), max_size=12),
    links=st.lists(st.tuples(_SUBJECTS, _SUBJECTS), max_size=6),
    queries=st.lists(st.tuples(_SUBJECTS, _OBJECTS, _ACTIONS), min_size=1, max_size=10),
)
def test_index_decides_like_casbin(
    tmp_path_factory: object,
    rules: list[tuple[str, str, str]],
    links: list[tuple[str, str]],
    queries: list[tuple[str, str, str]],
) -> None:
    """For random policies and requests, the compiled index allows exactly what casbin.Enforcer allows."""
    directory = tmp_path_factory.mktemp("eq")  # type: ignore[attr-defined]
    (directory / "model.conf").write_text(MODEL.read_text())
    csv = "".join(f"p, {s}, {o}, {a}\n" for s, o, a in rules) + "".join(f"g, {m}, {r}\n" for m, r in links if m != r)
    (directory / "policy.csv").write_text(csv or "# empty\n")
    policy = compile_policy(read_policy_dir(directory))
    enforcer = casbin.Enforcer(str(directory / "model.conf"), str(directory / "policy.csv"))
    for query in queries:
        assert policy.decide(*query).allowed == enforcer.enforce(*query), (csv, query)


_ROLES = [f"role:r{i}" for i in range(6)]
_WIDE_OBJECTS = st.sampled_from(
    ["api", "others", "volume:eng-x", "volume:eng-*", "volume:*", "bind:/srv/ci/x", "bind:/srv/*", "identity:1:2",
     "identity:1:*", "*", "vol*"]
)  # fmt: skip
_WIDE_ACTIONS = st.sampled_from(["container.create", "container.*", "c*", "mount", "assume", "bind", "*", "privileged"])


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(st.tuples(st.sampled_from(["ann", "bob", *_ROLES]), _WIDE_OBJECTS, _WIDE_ACTIONS), max_size=20),
    members=st.lists(st.tuples(st.sampled_from(["ann", "bob"]), st.sampled_from(_ROLES)), max_size=4),
    chain=st.lists(st.tuples(st.sampled_from(_ROLES), st.sampled_from(_ROLES)), max_size=8),
    identities=st.lists(st.tuples(st.sampled_from(["ann", *_ROLES]), st.integers(1, 3)), max_size=4),
    queries=st.lists(st.tuples(st.sampled_from(["ann", "bob", "eve"]), _WIDE_OBJECTS, _WIDE_ACTIONS), min_size=1),
)
def test_index_decides_like_casbin_with_role_chains_p2_and_wildcards(
    tmp_path_factory: object,
    *,
    rules: list[tuple[str, str, str]],
    members: list[tuple[str, str]],
    chain: list[tuple[str, str]],
    identities: list[tuple[str, int]],
    queries: list[tuple[str, str, str]],
) -> None:
    """Roles of roles, p2 lines and wildcard objects/actions: still exactly casbin.Enforcer's answers."""
    directory = tmp_path_factory.mktemp("eq2")  # type: ignore[attr-defined]
    (directory / "model.conf").write_text(MODEL.read_text())
    csv = "".join(f"p, {s}, {o}, {a}\n" for s, o, a in rules)
    csv += "".join(f"g, {m}, {r}\n" for m, r in [*members, *chain] if m != r)
    csv += "".join(f"p2, {s}, {20000 + n}, {30000 + n}\n" for s, n in identities)
    (directory / "policy.csv").write_text(csv or "# empty\n")
    policy = compile_policy(read_policy_dir(directory))
    enforcer = casbin.Enforcer(str(directory / "model.conf"), str(directory / "policy.csv"))
    for query in queries:
        assert policy.decide(*query).allowed == enforcer.enforce(*query), (csv, query)


def test_large_generated_policy_decides_like_casbin(tmp_path: Path) -> None:
    """A generated 5,000-line policy (users, nested roles, p2, patterns): 300 random requests agree with casbin."""
    import random  # noqa: PLC0415

    rnd = random.Random(7)
    lines = [f"g, role:r{r}, role:r{r - r % 5}" for r in range(100) if r % 5]
    for user in range(500):
        lines += [f"g, u{user}, role:r{rnd.randrange(100)}", f"p2, u{user}, {20000 + user}, 30000"]
    actions = ["container.*", "image.list", "volume.create", "*", "exec.create"]
    while len(lines) < 5000:
        holder = f"role:r{rnd.randrange(100)}" if rnd.random() < 0.8 else f"u{rnd.randrange(500)}"
        obj = rnd.choice(["api", f"volume:t{rnd.randrange(50)}-*", f"bind:/srv/u{rnd.randrange(50)}/*", "*"])
        act = rnd.choice(actions) if obj == "api" else rnd.choice(["mount", "create", "bind", "*"])
        lines.append(f"p, {holder}, {obj}, {act}")
    (tmp_path / "model.conf").write_text(MODEL.read_text())
    (tmp_path / "policy.csv").write_text("\n".join(lines) + "\n")
    policy = compile_policy(read_policy_dir(tmp_path))
    enforcer = casbin.Enforcer(str(tmp_path / "model.conf"), str(tmp_path / "policy.csv"))
    for _ in range(300):
        query = (
            f"u{rnd.randrange(520)}",
            rnd.choice(["api", f"volume:t{rnd.randrange(50)}-x", f"bind:/srv/u{rnd.randrange(50)}/d", "escalation"]),
            rnd.choice(["container.create", "image.list", "mount", "create", "bind", "privileged"]),
        )
        assert policy.decide(*query).allowed == enforcer.enforce(*query), query


def test_readme_examples_are_a_clean_policy(tmp_path: Path) -> None:
    """The worked examples in policies/README.md pass `policy check`: the documentation cannot rot."""
    import re  # noqa: PLC0415

    block = re.search(r"```csv\n(.*?)```", (EXAMPLE / "README.md").read_text(), re.S)
    assert block is not None
    (tmp_path / "model.conf").write_text(MODEL.read_text())
    (tmp_path / "policy.csv").write_text(block.group(1))
    policy = compile_policy(read_policy_dir(tmp_path))
    assert policy.problems == ()
    assert policy.decide("ci-bot", "bind:/srv/ci/build", "bind").allowed
    assert not policy.decide("audrey", "api", "container.create").allowed
    alice = policy.identity("alice").identity
    assert alice is not None and (alice.uid, alice.gid) == (10001, 10000)
