"""A reload that reuses the policy in force gives exactly the policy a fresh compile gives."""

from __future__ import annotations

from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fixeduser.policy.compiled import CompiledPolicy, compile_policy
from fixeduser.policy.files import read_policy_dir
from fixeduser.policy.store import DirectoryLoader

from .conftest import MODEL

_HOLDERS = ["ann", "bob", "cid", "role:r0", "role:r1", "role:r2"]
_OBJECTS = ["api", "others", "volume:eng-x", "volume:eng-*", "volume:*", "bind:/srv/*", "*", "vol*", "volume:", "nope"]
_ACTIONS = ["container.create", "container.*", "mount", "create", "*", "privileged", "mnt", ""]
_NAMES = ["10001", "10002", "20000", "0", "root", "nobody", ""]

_VALID_RULES = [
    ("api", "container.create"), ("api", "container.*"), ("api", "*"), ("others", "container.*"),
    ("volume:eng-x", "mount"), ("volume:eng-*", "create"), ("volume:*", "*"), ("bind:/srv/*", "bind"), ("*", "*"),
]  # fmt: skip
VALID_LINE = st.one_of(
    st.builds(lambda h, r: f"p, {h}, {r[0]}, {r[1]}", st.sampled_from(_HOLDERS), st.sampled_from(_VALID_RULES)),
    st.builds("g, {}, {}".format, st.sampled_from(_HOLDERS[:3]), st.sampled_from(_HOLDERS[3:])),
    st.builds("p2, {}, {}, 10000".format, st.sampled_from(_HOLDERS), st.sampled_from(["10001", "10002"])),
    st.sampled_from(["# a comment", "", "p,ann,api,container.create", "  p ,  bob , api , *  "]),
)
LINE = st.one_of(
    st.builds("p, {}, {}, {}".format, st.sampled_from(_HOLDERS), st.sampled_from(_OBJECTS), st.sampled_from(_ACTIONS)),
    st.builds("g, {}, {}".format, st.sampled_from(_HOLDERS), st.sampled_from([*_HOLDERS[3:], "r3"])),
    st.builds("p2, {}, {}, {}".format, st.sampled_from(_HOLDERS), st.sampled_from(_NAMES), st.sampled_from(_NAMES)),
    st.sampled_from(["# a comment", "", "p,ann,api,container.create", "  p ,  bob , api , *  ", "p, ann", "x, y, z"]),
)


@st.composite
def edits(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """A policy and an edit of it: lines inserted, removed, changed or moved, as admins do."""
    before = draw(st.lists(VALID_LINE, max_size=25))
    after = list(before)
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, len(after)))
        kind = draw(st.sampled_from(["insert", "remove", "change", "append"]))
        new = draw(st.one_of(VALID_LINE, LINE))
        if kind == "insert" or not after:
            after.insert(where, new)
        elif kind == "append":
            after.append(new)
        elif kind == "remove":
            after.pop(min(where, len(after) - 1))
        else:
            after[min(where, len(after) - 1)] = new
    return before, after


def _write(directory: Path, lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.conf").write_text(MODEL.read_text())
    (directory / "policy.csv").write_text("".join(f"{line}\n" for line in lines) or "# empty\n")
    return directory


def _everything(policy: CompiledPolicy) -> object:
    """All that a running plugin can observe of a policy."""
    subjects = [*_HOLDERS, "eve"]
    return (
        policy.version,
        [str(problem) for problem in policy.problems],
        policy.source.lines,
        [(s, policy.roles(s), policy.rule_lines(s), policy.identity_lines(s), policy.membership_lines(s))
         for s in subjects],
        [policy.identity(s) for s in subjects],
        [policy.decide(s, o, a) for s in subjects for o in _OBJECTS for a in _ACTIONS],
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(edit=edits())
def test_reload_reusing_the_policy_in_force_equals_a_fresh_compile(tmp_path_factory: object, edit: object) -> None:
    before, after = edit  # type: ignore[misc]
    directory = _write(tmp_path_factory.mktemp("inc"), before)  # type: ignore[attr-defined]
    in_force = compile_policy(read_policy_dir(directory))
    assume(not in_force.problems)  # only a policy without problems is ever in force
    for subject in [*_HOLDERS, "eve"]:  # a plugin in use has resolved identities (they are reused)
        in_force.identity(subject)
    _write(directory, after)
    reused = DirectoryLoader(directory).load(in_force)
    fresh = compile_policy(read_policy_dir(directory))
    assert _everything(reused) == _everything(fresh), (before, after)


def test_an_unchanged_reload_shares_the_lines_and_indexes_of_the_policy_in_force(tmp_path: Path) -> None:
    """What an edit leaves alone is not built again: the same line objects and per-holder indexes."""
    lines = ["p, ann, api, container.*", "p, bob, volume:eng-*, mount", "g, ann, role:r0", "p2, ann, 10001, 10000"]
    directory = _write(tmp_path, lines)
    in_force = compile_policy(read_policy_dir(directory))
    assert not in_force.problems
    _write(directory, [*lines, "p, cid, api, system.ping"])
    reloaded = DirectoryLoader(directory).load(in_force)
    assert not reloaded.problems and reloaded.version != in_force.version
    assert all(new is old for new, old in zip(reloaded.source.lines, in_force.source.lines, strict=False))
    assert reloaded._rules["bob"] is in_force._rules["bob"]
    assert reloaded.decide("cid", "api", "system.ping").allowed
