"""`fixeduser whois USER`: roles, fixed identity, volumes and escalations, each with its policy lines."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fixeduser.admin.common import add_policy_options, load_for_admin, table
from fixeduser.admin.whois import whois


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("whois", help="what the policy says about a user, with the deciding lines")
    parser.add_argument("user", help="TLS user (certificate CN), @local, or role:NAME")
    add_policy_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    policy = load_for_admin(args)
    report = whois(policy, args.user)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(human(report))
    return 0 if report["known"] else 1


def _grant_rows(entries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(e["object"], e["action"], e["holder"], e["where"]) for e in entries]


def human(report: dict[str, Any]) -> str:
    subject = report["subject"]
    out = [f"{subject} (policy version {report['policy_version']})"]
    if not report["known"]:
        out.append(f"  the policy does not name {subject}: every request is denied")
        return "\n".join(out)
    out.append("")
    roles = report["roles"]
    if roles:
        out.append(table(("ROLE", "GIVEN BY"), [(r["role"], " <- ".join(v["where"] for v in r["via"])) for r in roles]))
    else:
        out.append("no roles")
    out.append("")
    identity = report["identity"]
    sources = ", ".join(f"{s['where']} ({s['text']})" for s in report["identity_sources"]) or "-"
    if identity:
        out.append(
            f"fixed identity: uid {identity['uid']} gid {identity['gid']} "
            f"(written {identity['user']}:{identity['group']}) from {sources}"
        )
    else:
        out.append(f"fixed identity: NONE - {report['identity_error']}")
    grants = report["grants"]
    for key, title in (
        ("volumes", "fixeduser volumes"),
        ("escalations", "escalations and host paths"),
        ("identities", "other identities it may assume"),
        ("others", "other users' containers"),
        ("other", "wide grants (any object)"),
        ("api", "Docker API actions"),
    ):
        out.append("")
        if grants[key]:
            out.append(f"{title}:")
            out.append(table(("OBJECT", "ACTION", "VIA", "LINE"), _grant_rows(grants[key])))
        else:
            out.append(f"{title}: none")
    return "\n".join(out)
