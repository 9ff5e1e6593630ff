"""`fixeduser status`: ask the running plugin (its root-only control socket) what it is doing."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fixeduser.admin.common import table
from fixeduser.app.settings import CONTROL_SOCKET_NAME
from fixeduser.linux.unixhttp import unix_http_request


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("status", help="policy version, decisions and mounts of the running plugin")
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/fixeduser"), help="the plugin's --state-dir")
    parser.add_argument("--socket", type=Path, help="the control socket (default: STATE_DIR/control.sock)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def fetch_status(socket: Path, timeout: float = 5.0) -> dict[str, Any]:
    status, body = unix_http_request(socket, "GET", "/status", timeout=timeout)
    if status != 200:
        raise OSError(f"control socket answered HTTP {status}")
    result: dict[str, Any] = json.loads(body)
    return result


def run(args: argparse.Namespace) -> int:
    socket = args.socket or args.state_dir / CONTROL_SOCKET_NAME
    try:
        status = fetch_status(socket)
    except (OSError, ValueError) as exc:
        print(f"fixeduser status: cannot reach the plugin at {socket}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(status, indent=2) if args.json else human(status))
    return 0


def human(status: dict[str, Any]) -> str:
    policy = status.get("policy", {})
    out = [f"policy version {policy.get('version')}  from {policy.get('source') or policy.get('directory')}"]
    out.append(f"  reloads {policy.get('reloads', 0)}, rejected reloads {policy.get('failed_reloads', 0)}")
    if policy.get("last_error"):
        out.append(f"  last rejected reload: {policy['last_error']}")
    if (asked := status.get("daemon_asks_fixeduser")) is not None:
        out.append(_asked(asked))
    decisions = status.get("decisions", {})
    out += ["", table(("DECISION", "COUNT"), sorted(decisions.items())) if decisions else "no decisions yet"]
    mounts = status.get("mounts_per_identity", {})
    out += ["", table(("IDENTITY", "ACTIVE MOUNTS"), sorted(mounts.items())) if mounts else "no active mounts"]
    if tasks := status.get("background_tasks", {}):
        rows = [
            (name, "yes" if t.get("healthy") else "NO", t.get("failures", 0), t.get("last_error") or "")
            for name, t in tasks.items()
        ]
        out += ["", table(("BACKGROUND TASK", "HEALTHY", "FAILURES", "LAST ERROR"), rows)]
    if audit := status.get("audit"):
        out += [
            "",
            f"audit: {audit.get('backlog_lines', 0)} lines ({audit.get('backlog_bytes', 0)} bytes) waiting,"
            f" {audit.get('dropped', 0)} records dropped"
            + (f"; cannot write: {audit['last_error']}" if audit.get("last_error") else ""),
        ]
    shown = ("policy", "decisions", "mounts_per_identity", "background_tasks", "audit", "daemon_asks_fixeduser")
    rest = {k: v for k, v in status.items() if k not in shown}
    if rest:
        out += ["", *(f"{key}: {value}" for key, value in sorted(rest.items()))]
    return "\n".join(out)


def _asked(asked: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(asked.get("since") or 0))
    if asked.get("consulted") is None:
        return "daemon: not checked yet whether it asks fixeduser about its requests"
    if asked["consulted"]:
        return f"daemon: asks fixeduser about its requests ({asked.get('checks', 0)} checks)"
    return f"daemon: DOES NOT ASK fixeduser about its requests since {since}: it allows every request (see /healthz)"
