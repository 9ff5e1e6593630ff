"""What a `p` line may name: the objects and actions the plugin ever asks the policy about.

keyMatch patterns always "compile", so a typo would silently grant nothing (or, with a `*` in the
middle, more than meant: keyMatch ignores everything after the first `*`). This module turns such
lines into located problems instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cache, lru_cache

from casbin.util import key_match  # type: ignore[import-untyped]

OBJECT_KINDS = ("api", "others", "escalation", "volume:<name>", "bind:<host path>", "identity:<uid>:<gid>")
VOLUME_ACTIONS = frozenset({"create", "mount", "remove"})
_IDENTITY_OBJECT = re.compile(r"^identity:(\d+):(\d+)$")
_IDENTITY_PATTERN = re.compile(r"^identity:(\d*|\d+:\d*)\*$")


@cache
def _api_actions() -> frozenset[str]:
    from fixeduser.docker_api import ROUTES  # noqa: PLC0415 - keeps `policy` importable without the route table

    return frozenset(route.action for route in ROUTES)


@cache
def _others_actions() -> frozenset[str]:
    """Every action on someone's object: the authorizer asks `others` about exactly these."""
    from fixeduser.docker_api import ROUTES  # noqa: PLC0415 - keeps `policy` importable without the route table

    return frozenset(route.action for route in ROUTES if route.owner is not None)


@cache
def _escalation_actions() -> frozenset[str]:
    from fixeduser.policy.escalations import CLASSES  # noqa: PLC0415 - the class list imports docker_api models

    return frozenset(CLASSES) - {"bind"}  # a host path is granted on `bind:<path>`, action `bind`


def actions_for_kind(kind: str) -> frozenset[str]:
    """Every action the plugin asks about for objects of this kind."""
    if kind == "api":
        return _api_actions()
    if kind == "others":
        return _others_actions()
    if kind == "escalation":
        return _escalation_actions()
    return {"volume": VOLUME_ACTIONS, "bind": frozenset({"bind"}), "identity": frozenset({"assume"})}[kind]


_KIND_SAMPLES = {
    "api": "api",
    "others": "others",
    "escalation": "escalation",
    "volume": "volume:",
    "bind": "bind:/",
    "identity": "identity:",
}


@lru_cache(maxsize=4096)  # bounded: objects are often unique per line
def _kinds_covered(obj: str) -> tuple[tuple[str, ...], str | None]:
    """The object kinds an object pattern can match, or an error saying why it matches none."""
    return _pattern_kinds(obj) if "*" in obj else _exact_kind(obj)


def _pattern_kinds(obj: str) -> tuple[tuple[str, ...], str | None]:
    prefix = obj[: obj.index("*")]
    kinds = tuple(k for k, sample in _KIND_SAMPLES.items() if sample.startswith(prefix) or prefix.startswith(sample))
    error = None
    kind, sep, _ = prefix.partition(":")
    if sep and kind not in _KIND_SAMPLES:
        error = f"unknown object kind {kind!r} in {obj!r}; objects are {', '.join(OBJECT_KINDS)}"
    elif not kinds:
        error = f"object {obj!r} matches no object the plugin asks about ({', '.join(OBJECT_KINDS)})"
    elif prefix.startswith("bind:") and not prefix.startswith("bind:/"):
        error = f"object {obj!r}: bind paths are absolute host paths (bind:/srv/...)"
    elif prefix.startswith("identity:") and not _IDENTITY_PATTERN.match(obj):
        error = f"object {obj!r}: identity objects are numeric, identity:<uid>:<gid> (e.g. identity:10001:*)"
    return ((), error) if error else (kinds, None)


def _exact_kind(obj: str) -> tuple[tuple[str, ...], str | None]:
    if obj in ("api", "others", "escalation"):
        return (obj,), None
    kind, sep, rest = obj.partition(":")
    error = None
    if not sep or kind not in ("volume", "bind", "identity"):
        error = f"unknown object {obj!r}; objects are {', '.join(OBJECT_KINDS)}"
    elif not rest:
        error = f"object {obj!r} names no {kind}"
    elif kind == "bind" and not rest.startswith("/"):
        error = f"object {obj!r}: bind paths are absolute host paths (bind:/srv/...)"
    elif kind == "identity" and not _IDENTITY_OBJECT.match(obj):
        error = f"object {obj!r}: identity objects are numeric, identity:<uid>:<gid> (e.g. identity:10001:10000)"
    return ((), error) if error else ((kind,), None)


def _star_problem(what: str, value: str) -> str | None:
    if "*" in value and value.index("*") != len(value) - 1:
        return (
            f"{what} {value!r} has a `*` before its end; keyMatch ignores everything after the first `*`, "
            f"so it means {value[: value.index('*') + 1]!r} (write that, or split the line)"
        )
    return None


def pattern_problems(obj: str, act: str) -> tuple[str, ...]:
    """Why a `p` line's object and action cannot mean what the admin wrote (empty when fine).

    Runs once per `p` line (80,000 times for a policy of 100,000 lines, most objects unique), so
    only what depends on the whole object is computed per line; the rest is cached by kind."""
    problems = tuple(p for p in (_star_problem("object", obj), _star_problem("action", act)) if p)
    if problems:
        return problems
    kinds, error = _kinds_of(obj)
    if error:
        return (error,)
    unknown = _unknown_action(kinds, act)
    return (f"action {act!r} is never asked for on {obj!r}; {unknown}",) if unknown else ()


def _kinds_of(obj: str) -> tuple[tuple[str, ...], str | None]:
    if obj.startswith("volume:") and len(obj) > len("volume:"):  # the bulk of a big policy
        return ("volume",), None
    return _kinds_covered(obj)


@lru_cache(maxsize=1024)
def _unknown_action(kinds: tuple[str, ...], act: str) -> str:
    """Empty if `act` matches an action asked about for `kinds`, else the hint and the known actions."""
    known: set[str] = set()
    for kind in kinds:
        known |= actions_for_kind(kind)
    if any(key_match(action, act) for action in known):
        return ""
    close = difflib.get_close_matches(act, known, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{hint}known actions: {_listing(known)}"


def _listing(actions: Iterable[str], limit: int = 12) -> str:
    ordered = sorted(actions)
    shown = ", ".join(ordered[:limit])
    return shown + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")
