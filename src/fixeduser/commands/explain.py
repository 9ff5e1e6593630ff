"""`fixeduser explain`: would the plugin allow this docker command (or raw API request), and why?

Never contacts a daemon: the requests the docker CLI would send go through a real Authorizer
built from the policy, with throw-away state.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from fixeduser.admin.common import add_policy_options, load_for_admin, table
from fixeduser.admin.dockercli import ApiCall, CliError, Translation, translate
from fixeduser.admin.explain import Scenario, Step, explain
from fixeduser.app.settings import load_settings


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "explain",
        help="would the plugin allow a docker command for a user, and which policy line decides",
        description="fixeduser explain --user alice -- docker run -v eng-data:/data busybox true\n"
        "fixeduser explain --user alice --method POST --uri /v1.41/containers/create --body @body.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--user", required=True, help="TLS user (certificate CN); @local for unix-socket callers")
    add_policy_options(parser)
    parser.add_argument("--method", help="raw form: HTTP method")
    parser.add_argument("--uri", help="raw form: request URI as the daemon sees it (e.g. /v1.41/containers/json)")
    parser.add_argument("--body", help="raw form: JSON body, or @FILE")
    parser.add_argument("--driver-name", default="fixeduser", help="the plugin's volume driver name")
    parser.add_argument(
        "--config", type=Path, help="the serve TOML file: its folders are protected as serve protects them"
    )
    parser.add_argument("--container-owner", help="owner of existing containers the command names (default: the user)")
    parser.add_argument(
        "--missing-volume", action="append", default=[], metavar="NAME",
        help="this named volume does not exist yet (default: named volumes exist as fixeduser volumes)",
    )  # fmt: skip
    parser.add_argument("docker", nargs=argparse.REMAINDER, help="-- docker ARGS...")
    parser.set_defaults(run=run)


def _raw_call(args: argparse.Namespace) -> ApiCall:
    body: dict[str, Any] | None = None
    if args.body is not None:
        text = Path(args.body[1:]).read_text() if args.body.startswith("@") else args.body
        body = json.loads(text)
    created = "f1" * 32 if args.method.upper() == "POST" and "/containers/create" in args.uri else None
    return ApiCall(args.method.upper(), args.uri, body, created_id=created)


def _translation(args: argparse.Namespace) -> Translation:
    docker = [a for a in args.docker if a != "--"] if args.docker else []
    if args.method or args.uri:
        if not (args.method and args.uri) or docker:
            raise CliError("the raw form needs both --method and --uri, and no docker command")
        return Translation([_raw_call(args)])
    if not docker:
        raise CliError("give a docker command after `--`, or --method and --uri")
    return translate(docker)


def run(args: argparse.Namespace) -> int:
    try:
        translation = _translation(args)
        settings = load_settings(args.config, {"policy_dir": args.policy_dir})
    except (CliError, OSError, ValueError) as exc:
        print(f"fixeduser explain: {exc}", file=sys.stderr)
        return 2
    policy = load_for_admin(args)
    scenario = Scenario(
        volumes=translation.volumes - set(args.missing_volume),
        containers=translation.containers,
        container_owner=args.container_owner,
        driver_name=args.driver_name,
        settings=settings,
    )
    steps = explain(policy, args.user, translation.calls, scenario)
    allowed = all(step.allow for step in steps)
    if args.json:
        print(json.dumps({
            "user": args.user, "policy_version": policy.version, "allowed": allowed,
            "assumed": {"volumes": sorted(scenario.volumes), "containers": sorted(scenario.containers)},
            "requests": [step.__dict__ for step in steps],
        }, indent=2))  # fmt: skip
    else:
        print(_human(args.user, policy.version, steps, scenario))
    return 0 if allowed else 1


def _human(user: str, version: str, steps: list[Step], scenario: Scenario) -> str:
    rows = [
        (
            step.method,
            re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", step.uri),
            step.action,
            "ALLOW" if step.allow else "DENY",
            step.rule or "-",
        )
        for step in steps
    ]
    out = [f"policy version {version}, user {user}"]
    if scenario.volumes or scenario.containers:
        assumed = [f"fixeduser volume {v}" for v in sorted(scenario.volumes)]
        owner = scenario.container_owner or user
        assumed += [f"container {c} owned by {owner}" for c in sorted(scenario.containers)]
        out.append(f"assuming these exist: {', '.join(assumed)}")
    out += ["", table(("METHOD", "URI", "ACTION", "DECISION", "RULE"), rows), ""]
    last = steps[-1]
    if last.allow:
        out.append(f"ALLOWED: every request of this command is allowed for {user}.")
    else:
        out.append(f"DENIED at {last.method} {last.uri}:")
        out.append(f"  {last.message}")
    return "\n".join(out)
