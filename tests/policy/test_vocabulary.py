"""Which objects and actions a `p` line may name, and how a wrong one is explained."""

from __future__ import annotations

import pytest

from fixeduser.policy.vocabulary import pattern_problems


@pytest.mark.parametrize(
    ("obj", "act"),
    [
        ("api", "container.create"),
        ("api", "container.*"),
        ("api", "*"),
        ("*", "*"),
        ("others", "container.start"),
        ("others", "container.prune"),
        ("others", "exec.start"),
        ("others", "network.connect"),
        ("others", "checkpoint.create"),
        ("others", "service.update"),
        ("others", "task.logs"),
        ("escalation", "privileged"),
        ("escalation", "*"),
        ("volume:eng-*", "mount"),
        ("volume:*", "remove"),
        ("bind:/srv/ci/*", "bind"),
        ("identity:10001:10000", "assume"),
        ("identity:10001:*", "assume"),
        ("vol*", "create"),
    ],
)
def test_valid_patterns(obj: str, act: str) -> None:
    """Lines the plugin can actually match are accepted."""
    assert pattern_problems(obj, act) == ()


@pytest.mark.parametrize(
    ("obj", "act", "expected"),
    [
        ("volum:x", "mount", "unknown object 'volum:x'"),
        ("apis", "container.create", "unknown object"),
        ("volum:eng-*", "mount", "unknown object kind 'volum'"),
        ("volume:*-data", "mount", "`*` before its end"),
        ("api", "container.*.get", "`*` before its end"),
        ("api", "contianer.create", "did you mean container.create"),
        ("api", "mount", "never asked for on 'api'"),
        ("volume:x", "delete", "never asked for"),
        ("escalation", "bind", "never asked for"),
        ("bind:srv/ci", "bind", "absolute host paths"),
        ("identity:alice:eng", "assume", "numeric"),
        ("others", "image.list", "never asked for"),
        ("xyz*", "create", "matches no object"),
    ],
)
def test_invalid_patterns_say_why(obj: str, act: str, expected: str) -> None:
    """Typos, unknown kinds and mid-pattern stars are problems with a hint."""
    problems = pattern_problems(obj, act)
    assert problems and expected in problems[0], problems
