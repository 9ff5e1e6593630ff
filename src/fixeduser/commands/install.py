"""`fixeduser install`: systemd unit, daemon.json entry, FUSE settings and folders (root; see admin.install)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from fixeduser.admin.install import InstallError, InstallOptions, install

DEFAULTS = InstallOptions()


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subcommands.add_parser("install", help="install as a systemd service started before docker (root)")
    cmd.add_argument("--root", type=Path, default=DEFAULTS.root, help="install below this folder (default /)")
    cmd.add_argument("--executable", type=Path, help="the fixeduser program the unit runs (default: this one)")
    cmd.add_argument("--policy-dir", type=Path, default=DEFAULTS.policy_dir)
    cmd.add_argument("--state-dir", type=Path, default=DEFAULTS.state_dir)
    cmd.add_argument("--local-root", type=Path, default=DEFAULTS.local_root, help="backing storage of volumes")
    cmd.add_argument("--authz-name", default=DEFAULTS.authz_name)
    cmd.add_argument("--volume-name", default=DEFAULTS.volume_name)
    cmd.add_argument("--docker-host", default=DEFAULTS.docker_host)
    cmd.add_argument("--example-policy", type=Path, help="copy this policy folder in when the policy folder is empty")
    cmd.set_defaults(run=run)


def _this_program() -> Path:
    found = shutil.which("fixeduser") or sys.argv[0]
    return Path(found).resolve()


def run(args: argparse.Namespace) -> int:
    options = InstallOptions(
        root=args.root.resolve(),
        executable=args.executable or _this_program(),
        policy_dir=args.policy_dir,
        state_dir=args.state_dir,
        local_root=args.local_root,
        authz_name=args.authz_name,
        volume_name=args.volume_name,
        docker_host=args.docker_host,
        example_policy=args.example_policy,
    )
    try:
        done = install(options)
    except (InstallError, OSError) as exc:
        print(f"fixeduser install: {exc}", file=sys.stderr)
        return 1
    print("\n".join(f"  {line}" for line in done))
    if options.root == Path("/"):
        print(
            "next: put a policy in place (fixeduser policy check), then\n"
            "  udevadm control --reload && udevadm trigger --sysname-match=fuse\n"
            "  systemctl daemon-reload && systemctl enable --now fixeduser.service && systemctl restart docker"
        )
    return 0
