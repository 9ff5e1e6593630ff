"""An immutable, indexed form of a policy: decisions in microseconds, each naming its rule.

Casbin's enforcer scans every line per decision; this index looks only at the rules of the
subject and its roles. `tests/policy` proves it decides exactly like `casbin.Enforcer`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from fixeduser.policy.files import PolicyLine, PolicyProblem, PolicySource
from fixeduser.policy.identity import Identity, IdentityError, resolve_gid, resolve_uid
from fixeduser.policy.vocabulary import pattern_problems

ROLE_PREFIX = "role:"
LOCAL_SUBJECT = "@local"
_DECISION_CACHE_LIMIT = 65536


class Decision(BaseModel):
    """Whether a subject may do an action on an object, and the line that allowed it."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    rule: PolicyLine | None = None


class IdentityResolution(BaseModel):
    """A subject's fixed identity, or the reason it has none; `sources` are the deciding lines."""

    model_config = ConfigDict(frozen=True)

    subject: str
    identity: Identity | None
    error: str | None
    sources: tuple[PolicyLine, ...] = ()


class _Rule(NamedTuple):
    obj: str
    act: str
    line: PolicyLine
    order: int  # position among the holder's rules: the first match is the one reported
    # keyMatch keys: the text before a trailing `*` (or all of it), and whether there is a `*`
    obj_key: str
    act_key: str
    act_star: bool

    @staticmethod
    def of(line: PolicyLine, obj: str, act: str, order: int) -> _Rule:
        act_star = "*" in act
        return _Rule(
            obj,
            act,
            line,
            order,
            obj[: obj.index("*")] if "*" in obj else obj,
            act[: act.index("*")] if act_star else act,
            act_star,
        )


@dataclass(frozen=True)
class _HolderRules:
    """One subject's or role's rules, indexed so a decision touches only the candidates.

    keyMatch(key, pattern) is `key == pattern` without a `*`, else `key.startswith(prefix)`.
    """

    exact: dict[tuple[str, str], _Rule]  # (obj, act) without stars -> first such rule
    by_obj: dict[str, tuple[tuple[str, _Rule], ...]]  # exact obj, act pattern -> (act prefix, rule)
    # obj patterns by object kind ("volume:", "bind:", ... or "" for kind-spanning ones like `*`):
    # rules with an object pattern, in line order
    patterns: dict[str, tuple[_Rule, ...]]
    all: tuple[_Rule, ...]

    @staticmethod
    def build(rules: list[_Rule]) -> _HolderRules:
        exact: dict[tuple[str, str], _Rule] = {}
        by_obj: dict[str, list[tuple[str, _Rule]]] = defaultdict(list)
        patterns: dict[str, list[_Rule]] = defaultdict(list)
        for rule in rules:
            if "*" in rule.obj:
                patterns[_kind(rule.obj_key)].append(rule)
            elif rule.act_star:
                by_obj[rule.obj].append((rule.act_key, rule))
            else:
                exact.setdefault((rule.obj, rule.act), rule)
        return _HolderRules(
            exact=exact,
            by_obj={obj: tuple(entries) for obj, entries in by_obj.items()},
            patterns={kind: tuple(entries) for kind, entries in patterns.items()},
            all=tuple(rules),
        )

    def first_match(self, obj: str, act: str) -> _Rule | None:
        best = self.exact.get((obj, act))
        for prefix, rule in self.by_obj.get(obj, ()):
            if act.startswith(prefix) and (best is None or rule.order < best.order):
                best = rule
                break  # entries are in order: later ones cannot be earlier
        for kind in {_kind(obj), ""}:
            for rule in self.patterns.get(kind, ()):
                if best is not None and rule.order > best.order:
                    break
                if obj.startswith(rule.obj_key) and (
                    act.startswith(rule.act_key) if rule.act_star else act == rule.act_key
                ):
                    best = rule
                    break
        return best


def _kind(obj_or_prefix: str) -> str:
    """`volume:` for `volume:x` and `volume:eng-`; "" when the text has no complete kind."""
    kind, sep, _ = obj_or_prefix.partition(":")
    return kind + sep if sep else ""


@dataclass
class CompiledPolicy:
    """The policy a running plugin decides with. Never mutated after `compile_policy` returns."""

    version: str
    source: PolicySource
    _roles: dict[str, tuple[str, ...]]
    _rules: dict[str, _HolderRules]
    _identity_lines: dict[str, tuple[PolicyLine, ...]]
    _membership_lines: dict[str, tuple[PolicyLine, ...]]
    problems: tuple[PolicyProblem, ...]
    _decisions: dict[tuple[str, str, str], Decision] = field(default_factory=dict)
    _identities: dict[str, IdentityResolution] = field(default_factory=dict)

    def roles(self, subject: str) -> tuple[str, ...]:
        """Every role the subject has, directly or through other roles."""
        return self._roles.get(subject, ())

    def membership_lines(self, subject: str) -> tuple[PolicyLine, ...]:
        """The `g` lines that give this subject (user or role) its direct roles."""
        return self._membership_lines.get(subject, ())

    def rule_lines(self, holder: str) -> tuple[PolicyLine, ...]:
        """The `p` lines written for this exact subject or role (not inherited ones)."""
        rules = self._rules.get(holder)
        return tuple(rule.line for rule in rules.all) if rules else ()

    def identity_lines(self, holder: str) -> tuple[PolicyLine, ...]:
        """The `p2` lines written for this exact subject or role."""
        return self._identity_lines.get(holder, ())

    def subjects(self) -> list[str]:
        """Every user-like subject the policy names (roles excluded)."""
        named = set(self._roles) | set(self._rules) | set(self._identity_lines)
        return sorted(s for s in named if not s.startswith(ROLE_PREFIX))

    def decide(self, subject: str, obj: str, act: str) -> Decision:
        key = (subject, obj, act)
        cached = self._decisions.get(key)
        if cached is None:
            cached = self._decide(subject, obj, act)
            if len(self._decisions) >= _DECISION_CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = cached
        return cached

    def _decide(self, subject: str, obj: str, act: str) -> Decision:
        for holder in (subject, *self.roles(subject)):
            rules = self._rules.get(holder)
            if rules is not None:
                match = rules.first_match(obj, act)
                if match is not None:
                    return Decision(allowed=True, rule=match.line)
        return Decision(allowed=False)

    def identity(self, subject: str) -> IdentityResolution:
        cached = self._identities.get(subject)
        if cached is None:
            cached = self._resolve_identity(subject)
            self._identities[subject] = cached
        return cached

    def _resolve_identity(self, subject: str) -> IdentityResolution:
        """Per field (user, group): the subject's own lines win; otherwise all roles must agree."""
        own = self._identity_lines.get(subject, ())
        inherited = [line for role in self.roles(subject) for line in self._identity_lines.get(role, ())]
        chosen: dict[str, tuple[str, tuple[PolicyLine, ...]]] = {}
        for index, name in ((1, "user"), (2, "group")):
            for lines, origin in ((own, "its own"), (inherited, "its roles'")):
                values = _distinct_values(lines, index)
                if len(values) > 1:
                    return IdentityResolution(
                        subject=subject,
                        identity=None,
                        error=_ambiguity_message(subject, name, origin, values),
                        sources=tuple(line for group in values.values() for line in group),
                    )
                if values:
                    value, deciding = next(iter(values.items()))
                    chosen[name] = (value, tuple(deciding))
                    break
        return _identity_from_choice(subject, chosen)


def _distinct_values(lines: Iterable[PolicyLine], index: int) -> dict[str, list[PolicyLine]]:
    values: dict[str, list[PolicyLine]] = defaultdict(list)
    for line in lines:
        if line.fields[index]:
            values[line.fields[index]].append(line)
    return values


def _ambiguity_message(subject: str, what: str, origin: str, values: dict[str, list[PolicyLine]]) -> str:
    listing = "; ".join(
        f"{value} ({', '.join(f'{line.fields[0]} at {line.where}' for line in lines)})"
        for value, lines in values.items()
    )
    fix = (
        f"add an explicit line `p2, {subject}, <user>, <group>` for {subject} or make the roles agree"
        if origin == "its roles'"
        else f"keep only one p2 line for {subject}"
    )
    return f"{subject}'s fixed {what} is ambiguous: {origin} lines map it to {listing}; {fix}"


def _identity_from_choice(subject: str, chosen: dict[str, tuple[str, tuple[PolicyLine, ...]]]) -> IdentityResolution:
    sources = tuple(line for _, lines in chosen.values() for line in lines)
    missing = [name for name in ("user", "group") if name not in chosen]
    if missing:
        return IdentityResolution(
            subject=subject,
            identity=None,
            error=f"{subject} has no fixed {' or '.join(missing)} in the policy "
            f"(add `p2, {subject}, <user>, <group>` or a p2 line for one of its roles)",
            sources=sources,
        )
    user, group = chosen["user"][0], chosen["group"][0]
    try:
        uid, gid = resolve_uid(user), resolve_gid(group)
    except IdentityError as exc:
        return IdentityResolution(subject=subject, identity=None, error=str(exc), sources=sources)
    if uid == 0 or gid == 0:
        return IdentityResolution(
            subject=subject,
            identity=None,
            error=f"{subject} maps to root ({user}:{group}), which is never allowed",
            sources=sources,
        )
    return IdentityResolution(
        subject=subject,
        identity=Identity(uid=uid, gid=gid, user=user, group=group),
        error=None,
        sources=sources,
    )


def compile_policy(source: PolicySource, *, previous: CompiledPolicy | None = None) -> CompiledPolicy:
    """Index a policy source and collect every problem a running plugin would trip over.

    `previous`, the policy in force (so free of problems), lets a reload reuse what an edit left
    unchanged: lines it had need no pattern check, holders whose rule lines are the same keep
    their index, and subjects whose identity inputs are the same keep their resolution. The
    result is the same as without it (property-tested); a reload that changes a few lines of a
    policy of 100,000 is then a fraction of a full compile.
    """
    members: dict[str, list[str]] = defaultdict(list)
    membership_lines: dict[str, list[PolicyLine]] = defaultdict(list)
    rule_lines: dict[str, list[PolicyLine]] = defaultdict(list)
    identity_lines: dict[str, list[PolicyLine]] = defaultdict(list)
    problems = list(source.problems)
    # Checks of a p line depend on its text only (not on where it is): what the policy in force had passed.
    checked = {(line.ptype, line.fields) for line in previous.source.lines} if previous is not None else set()
    for line in source.lines:
        if line.ptype == "g":
            member, role = line.fields
            if not role.startswith(ROLE_PREFIX) or role == ROLE_PREFIX:
                problems.append(
                    PolicyProblem(
                        file=line.file,
                        line=line.line,
                        message=f"g lines give a role: the second field must be role:<name>, not {role!r}",
                    )
                )
            members[member].append(role)
            membership_lines[member].append(line)
        elif line.ptype == "p":
            if (line.ptype, line.fields) not in checked:
                problems.extend(_rule_line_problems(line))
            rule_lines[line.fields[0]].append(line)
        elif line.ptype == "p2":
            problems.extend(_identity_line_problems(line))
            identity_lines[line.fields[0]].append(line)
    policy = CompiledPolicy(
        version=_version_of(source),
        source=source,
        _roles={subject: _role_closure(subject, members) for subject in members},
        _rules={holder: _holder_rules(lines, previous, holder) for holder, lines in rule_lines.items()},
        _identity_lines={subject: tuple(lines) for subject, lines in identity_lines.items()},
        _membership_lines={subject: tuple(lines) for subject, lines in membership_lines.items()},
        problems=(),
    )
    if previous is not None:
        _reuse_identities(policy, previous)
    problems.extend(_ambiguity_problems(policy))
    policy.problems = tuple(problems)
    return policy


def _rule_line_problems(line: PolicyLine) -> list[PolicyProblem]:
    _, obj, act = line.fields
    if not obj or not act:
        return [PolicyProblem(file=line.file, line=line.line, message="object and action must not be empty")]
    return [PolicyProblem(file=line.file, line=line.line, message=message) for message in pattern_problems(obj, act)]


def _holder_rules(lines: list[PolicyLine], previous: CompiledPolicy | None, holder: str) -> _HolderRules:
    """The index of one holder's rules: the previous policy's when its rule lines are the same."""
    if previous is not None:
        before = previous._rules.get(holder)
        if (
            before is not None
            and len(before.all) == len(lines)
            and all(rule.line == line for rule, line in zip(before.all, lines, strict=True))
        ):
            return before
    usable = [line for line in lines if line.fields[1] and line.fields[2]]  # empty ones are problems already
    return _HolderRules.build(
        [_Rule.of(line, line.fields[1], line.fields[2], order) for order, line in enumerate(usable)]
    )


def _reuse_identities(policy: CompiledPolicy, previous: CompiledPolicy) -> None:
    """Carry over the identity resolutions whose inputs are unchanged and that name numbers only.

    A subject's resolution depends on its own p2 lines, its roles (in order) and their p2 lines;
    a user or group *name* also depends on the host's user database, so those are resolved anew."""
    for subject, resolution in previous._identities.items():
        if (
            policy.roles(subject) == previous.roles(subject)
            and all(policy.identity_lines(h) == previous.identity_lines(h) for h in (subject, *policy.roles(subject)))
            and all(line.fields[1].isdigit() and line.fields[2].isdigit() for line in resolution.sources)
        ):
            policy._identities[subject] = resolution


def _role_closure(subject: str, members: dict[str, list[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    queue = deque(members.get(subject, ()))
    while queue:
        role = queue.popleft()
        if role in seen or role == subject:
            continue
        seen[role] = None
        queue.extend(members.get(role, ()))
    return tuple(seen)


def _identity_line_problems(line: PolicyLine) -> list[PolicyProblem]:
    _, user, group = line.fields
    if not user and not group:
        return [PolicyProblem(file=line.file, line=line.line, message="p2 line sets neither a user nor a group")]
    problems = []
    for value, resolve in ((user, resolve_uid), (group, resolve_gid)):
        if not value:
            continue
        try:
            number = resolve(value)
        except IdentityError as exc:
            problems.append(PolicyProblem(file=line.file, line=line.line, message=str(exc)))
            continue
        if number == 0:
            problems.append(
                PolicyProblem(
                    file=line.file,
                    line=line.line,
                    message=f"{value!r} is root: never a fixed identity",
                )
            )
    return problems


def _ambiguity_problems(policy: CompiledPolicy) -> list[PolicyProblem]:
    problems = []
    for subject in policy.subjects():
        resolution = policy.identity(subject)
        if resolution.error and "ambiguous" in resolution.error:
            first = resolution.sources[0]
            problems.append(PolicyProblem(file=first.file, line=first.line, message=resolution.error))
    return problems


def _version_of(source: PolicySource) -> str:
    """A digest of every line's text, one per row (the same for a directory and its database copy)."""
    text = "".join([", ".join((line.ptype, *line.fields)) + "\n" for line in source.lines])
    return hashlib.sha256(text.encode()).hexdigest()[:12]
