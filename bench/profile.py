"""Profile `fixeduser serve` under the docker-session load with py-spy; print where its time goes.

    sudo .venv/bin/python -m bench.profile [--clients 1] [--seconds 10] [--policy-lines N] [--mix session|read]

Writes bench/out/profile-*.txt (collapsed stacks, for flame graph tools) and prints the functions
with the most inclusive and self time. py-spy samples without stopping the plugin (--nonblocking).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from collections import Counter
from pathlib import Path

from bench.client import run_load
from bench.common import BENCH_DIR, work_dir
from bench.plugin import FixeduserServer
from bench.workload import (
    READ_OPS,
    SESSION_OPS,
    Renderer,
    bench_policy_lines,
    load_capture,
    make_clients,
    scaled_policy_lines,
    write_policy_dir,
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -r bench/requirements.txt")
    return found


def summarize_collapsed(path: Path, top: int = 30) -> str:
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        self_time[frames[-1]] += n
    out = [f"{total} samples", "", "inclusive %  function"]
    out += [f"{100 * n / total:10.1f}  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self %  function"]
    out += [f"{100 * n / total:7.1f}  {f}" for f, n in self_time.most_common(top)]
    return "\n".join(out)


async def profile(base: Path, *, clients: int, seconds: float, policy_lines: int, mix: str, out: Path) -> str:
    if policy_lines:
        lines, users = scaled_policy_lines(policy_lines)
    else:
        lines, users = bench_policy_lines(64), [f"u{i}" for i in range(64)]
    server = FixeduserServer(base / "plugin", write_policy_dir(base / "policy", lines)).start()
    try:
        renderer = Renderer(load_capture(), server.driver)
        cl = make_clients(clients, users)
        await server.create_volumes(renderer, cl)
        ops = SESSION_OPS if mix == "session" else READ_OPS
        per_client = [renderer.calls(ops, c) for c in cl]
        spy = await asyncio.create_subprocess_exec(
            py_spy(),
            "record",
            "--nonblocking",
            "--rate",
            "400",
            "--format",
            "raw",
            "-p",
            str(server.pid),
            "-o",
            str(out),
            "-d",
            str(int(seconds) + 1),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.5)
        result = await run_load(server.authz_socket, per_client, seconds=seconds)
        await asyncio.wait_for(spy.communicate(), timeout=60)  # communicate: py-spy must not block on a full pipe
        head = f"{result.calls} calls, {result.throughput:.0f} calls/s with {clients} client(s)\n"
        return head + summarize_collapsed(out)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--policy-lines", type=int, default=0, help="scaled policy size (0: example + 64 users)")
    parser.add_argument("--mix", choices=("session", "read"), default="session")
    args = parser.parse_args()
    out_dir = BENCH_DIR / "out"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"profile-{args.mix}-c{args.clients}-p{args.policy_lines}.txt"
    with work_dir() as base:
        print(
            asyncio.run(
                profile(
                    base,
                    clients=args.clients,
                    seconds=args.seconds,
                    policy_lines=args.policy_lines,
                    mix=args.mix,
                    out=out,
                )
            )
        )
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
