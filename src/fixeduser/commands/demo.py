"""`fixeduser demo`: the plugin with a policy and the local backend, plus a private TLS dockerd.

Prints how to use docker as each TLS user; runs until Ctrl-C and cleans up its mounts and daemons.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from fixeduser.sandbox import Stack, dockerd_available, make_private_dir, start_stack

USERS = ("alice", "bob", "carol")


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subcommands.add_parser("demo", help="run fixeduser with a private TLS dockerd to try it out (root)")
    demo.add_argument("--policy-dir", type=Path, default=Path("policies"), help="edited live (default: policies)")
    demo.add_argument("--workdir", type=Path, default=None, help="where daemons keep state (default: a temp dir)")
    demo.add_argument(
        "--once", action="store_true", help="run the example commands as each user, print the results, then stop"
    )
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0 or not dockerd_available():
        print("fixeduser demo: needs root and dockerd (run scripts/setup first)", file=sys.stderr)
        return 2
    base = make_private_dir(args.workdir or Path(tempfile.gettempdir()), prefix="fixeduser-demo-")
    print(f"starting fixeduser and a private dockerd in {base} ...", flush=True)
    stack = start_stack(base, policy_dir=args.policy_dir.resolve(), users=USERS, prefix="fixeduser-demo")
    try:
        print(instructions(stack), flush=True)
        if args.once:
            return 0 if run_examples(stack) else 1
        wait_for_stop()
        return 0
    finally:
        print("stopping: daemon, plugin, mounts ...", flush=True)
        leftovers = stack.stop()
        if leftovers:
            print(f"could not unmount {leftovers}; left {base} in place", flush=True)
        else:
            shutil.rmtree(base)  # nothing is mounted below it any more, so this stays inside
            print("stopped cleanly", flush=True)


def wait_for_stop() -> None:
    def stop(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


def _docker_env(stack: Stack, user: str) -> str:
    assert stack.dockerd.tls is not None
    return (
        f"export DOCKER_HOST={stack.dockerd.tcp_host} DOCKER_TLS_VERIFY=1 "
        f"DOCKER_CERT_PATH={stack.dockerd.tls.bundle(user)}"
    )


def example_commands(stack: Stack) -> list[tuple[str, list[str]]]:
    """(user, docker arguments) pairs that show fixed-user volumes at work."""
    run = ["run", "--rm", "--network", "none", "-v", "eng-demo:/data", "busybox:local"]
    return [
        ("alice", ["volume", "create", "-d", stack.driver, "eng-demo"]),
        ("alice", [*run, "sh", "-c", "echo hi > /data/alice.txt && chmod 600 /data/alice.txt && id -u"]),
        ("bob", [*run, "sh", "-c", "touch /data/bob.txt; id -u; cat /data/alice.txt"]),
        ("carol", [*run, "ls", "/data"]),
        ("alice", ["volume", "inspect", "eng-demo"]),
    ]


def instructions(stack: Stack) -> str:
    lines = ["", f"fixeduser is running: authz plugin {stack.plugin.authz_name}, volume driver {stack.driver}", ""]
    for user in USERS:
        lines += [f"# as {user}:", f"  {_docker_env(stack, user)}"]
    lines += [
        "# as local root (the policy's @local, an admin in the example policy):",
        f"  export DOCKER_HOST={stack.dockerd.host}",
        "",
        "# then, for example:",
    ]
    lines += [f"  [{user}] docker {shlex.join(args)}" for user, args in example_commands(stack)]
    lines += [
        "",
        f"Backing storage: {stack.plugin.local_root} (ls -ln shows who wrote what)",
        f"Audit log: {stack.plugin.audit_path}; plugin log: {stack.plugin.log_path}",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def run_examples(stack: Stack) -> bool:
    """Run the examples; carol's run and bob's read of alice's 600 file are meant to fail."""
    print()
    for user, args in example_commands(stack):
        result = stack.docker(*args, user=user)
        print(f"[{user}] docker {shlex.join(args)}  -> exit {result.returncode}")
        for line in (result.stdout + result.stderr).strip().splitlines():
            print(f"    {line}")
    listing = sorted(
        f"{entry.name} {entry.stat().st_uid}:{entry.stat().st_gid}"
        for entry in (stack.plugin.local_root / "eng-demo").iterdir()
    )
    print("\nbacking storage of eng-demo (name uid:gid):", *listing, sep="\n    ")
    return listing == ["alice.txt 10001:10000", "bob.txt 10002:10000"]
