"""Everything the policy says about one user, each fact with the lines it comes from."""

from __future__ import annotations

from typing import Any

from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.files import PolicyLine


def _line(line: PolicyLine) -> dict[str, str]:
    return {"where": line.where, "text": line.text}


def _role_paths(policy: CompiledPolicy, subject: str) -> list[dict[str, Any]]:
    """Each role with the chain of g lines that gives it to the subject (breadth first: shortest)."""
    found: dict[str, list[PolicyLine]] = {}
    frontier = [(subject, list[PolicyLine]())]
    while frontier:
        nxt = []
        for member, path in frontier:
            for line in policy.membership_lines(member):
                role = line.fields[1]
                if role not in found and role != subject:
                    found[role] = [*path, line]
                    nxt.append((role, found[role]))
        frontier = nxt
    return [{"role": role, "via": [_line(line) for line in path]} for role, path in found.items()]


def whois(policy: CompiledPolicy, subject: str) -> dict[str, Any]:
    resolution = policy.identity(subject)
    holders = (subject, *policy.roles(subject))
    grants: dict[str, list[dict[str, str]]] = {
        "api": [], "others": [], "volumes": [], "escalations": [], "identities": [], "other": [],
    }  # fmt: skip
    for holder in holders:
        for line in policy.rule_lines(holder):
            _, obj, act = line.fields
            entry = {"holder": holder, "object": obj, "action": act, **_line(line)}
            if obj == "api":
                grants["api"].append(entry)
            elif obj == "others":
                grants["others"].append(entry)
            elif obj.startswith("volume:"):
                grants["volumes"].append(entry)
            elif obj == "escalation" or obj.startswith("bind:"):
                grants["escalations"].append(entry)
            elif obj.startswith("identity:"):
                grants["identities"].append(entry)
            else:
                grants["other"].append(entry)  # `*` and other wide patterns
    identity = resolution.identity
    return {
        "subject": subject,
        "policy_version": policy.version,
        "known": subject in policy.subjects() or bool(policy.roles(subject)),
        "roles": _role_paths(policy, subject),
        "identity": (
            {"uid": identity.uid, "gid": identity.gid, "user": identity.user, "group": identity.group}
            if identity
            else None
        ),
        "identity_error": resolution.error,
        "identity_sources": [_line(line) for line in dict.fromkeys(resolution.sources)],
        "grants": grants,
    }
