"""Part 1: decision latency and throughput at the plugin socket, fixeduser against the floor."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.client import LoadResult, run_load
from bench.common import FloorServer, proc_cpu_seconds, summarize
from bench.plugin import FixeduserServer
from bench.report import Chart, Part, Table, Target
from bench.workload import (
    OTHER_VOLUME_OPS,
    READ_OPS,
    SESSION_OPS,
    Renderer,
    bench_policy_lines,
    load_capture,
    make_clients,
    write_policy_dir,
)

CONCURRENCY = (1, 8, 64)
ROUNDS = 5  # turns each server gets per mix and concurrency, interleaved with the others
KEY_LABELS = (
    "system.ping Req",
    "container.list Req",
    "container.create Req",
    "container.create -v vol Req",
    "container.create --mount vol Req",
    "container.create -v vol Res",
    "container.start Req",
    "container.start Res",
    "container.inspect Req",
    "exec.create Req",
    "exec.start Req",
    "container.remove Res",
)
MIXES = {"docker session": SESSION_OPS, "read-only": READ_OPS, "run -v other volume": OTHER_VOLUME_OPS}


def ms(ns: float) -> float:
    return ns / 1e6


async def measure(
    server_pid: int, socket: Path, per_client: list, seconds: float, setup: list
) -> tuple[LoadResult, float]:
    cpu0 = proc_cpu_seconds(server_pid)
    result = await run_load(socket, per_client, seconds=seconds, setup=setup)
    return result, proc_cpu_seconds(server_pid) - cpu0


async def measure_interleaved(
    servers: dict[str, tuple[int, Path]], per_client: list, seconds: float, setup: list, rounds: int
) -> dict[str, tuple[LoadResult, float]]:
    """Each server's load and CPU over `rounds` rounds of `seconds / rounds`, the servers taking turns in an
    order that rotates each round: a slow spell of the machine falls on all of them alike
    (bench/NOTES.md#decision-rounds). The setup calls are sent in the first round only."""
    totals = {name: (LoadResult(seconds=0.0, calls=0), 0.0) for name in servers}
    names = list(servers)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            pid, socket = servers[name]
            result, cpu = await measure(pid, socket, per_client, seconds / rounds, setup if i == 0 else [])
            merged, spent = totals[name]
            totals[name] = (merged.add(result), spent + cpu)
    return totals


async def run(base: Path, *, quick: bool) -> Part:
    seconds, rounds = (1.5, 2) if quick else (10.0, ROUNDS)
    part = Part(
        key="decision",
        title="1. Decision latency and throughput at the plugin socket",
        measures=(
            "Replays AuthZReq/AuthZRes bodies recorded from a real dockerd (bench/data/authz-capture.json: "
            "`docker run --rm` with `-v vol`, with `--mount ...volume-driver=fixeduser`, without volumes, "
            "`docker ps`, `docker run -d --name`, `docker inspect`, `docker exec`, `docker rm -f`) against "
            "`fixeduser serve` and against the floor, a minimal allow-all aiohttp plugin (bench/floor.py) on "
            "asyncio's own event loop and the json module, all on a unix socket in their own process. A second "
            "floor answers allow-all through fixeduser's own plugin transport (fixeduser.plugin.server: "
            "httptools and orjson): the ratio to it is the cost of fixeduser's decision work alone. "
            "Each simulated client is one keep-alive "
            "connection with its own TLS user, container and volumes, sending the calls in daemon order "
            "(closed loop). Latency is one request/response on the socket, measured by the client. "
            f"Each mix and concurrency is measured in {rounds} rounds of {seconds / rounds:g} s per server, the three "
            "servers taking "
            "turns in an order that rotates each round, so that a slow spell of the machine falls on all of them. "
            "Server and client CPU are per call, from /proc and process_time."
        ),
    )
    capture = load_capture()
    policy = write_policy_dir(base / "policy", bench_policy_lines(64))
    server = FixeduserServer(base / "plugin", policy).start()
    floor = FloorServer(base / "floor.sock", base / "floor.log").start()
    same = FloorServer(base / "floor-same.sock", base / "floor-same.log", transport="fixeduser").start()
    try:
        renderer = Renderer(capture, server.driver)
        all_clients = make_clients(max(CONCURRENCY), [f"u{i}" for i in range(64)])
        await server.create_volumes(renderer, all_clients)
        throughput = Table(
            key="decision_throughput",
            title="Plugin socket throughput, docker-session mix (calls/s; CPU µs per call)",
            columns=[
                "mix",
                "clients",
                "floor calls/s",
                "floor (same transport) calls/s",
                "fixeduser calls/s",
                "floor/fixeduser",
                "floor (same transport)/fixeduser",
                "floor p99 ms",
                "fixeduser p99 ms",
                "server CPU µs/call (floor)",
                "server CPU µs/call (floor, same transport)",
                "server CPU µs/call (fixeduser)",
                "client CPU µs/call",
                "client CPU busy %",
            ],
            chart=Chart(
                x="clients",
                ys=["floor calls/s", "floor (same transport) calls/s", "fixeduser calls/s"],
                ylabel="calls/s",
            ),
        )
        latency = Table(
            key="decision_latency",
            title="Per-call latency, docker-session mix (ms)",
            columns=[
                "call",
                "floor p50 (1)",
                "floor p99 (1)",
                "fixeduser p50 (1)",
                "fixeduser p99 (1)",
                "fixeduser p99 (8)",
                "fixeduser p99 (64)",
            ],
            chart=Chart(x="call", ys=["floor p99 (1)", "fixeduser p99 (1)"], ylabel="ms (p99, 1 client)"),
        )
        results: dict[tuple[str, str, int], tuple[LoadResult, float]] = {}
        for mix, ops in MIXES.items():
            for c in CONCURRENCY:
                clients = all_clients[:c]
                per_client = [renderer.calls(ops, cl) for cl in clients]
                # the read-only mix inspects a container its client created earlier
                setup = [renderer.calls(("run_detached",), cl) for cl in clients] if ops == READ_OPS else []
                measured = await measure_interleaved(
                    {
                        "floor": (floor.pid, floor.socket_path),
                        "same": (same.pid, same.socket_path),
                        "fixeduser": (server.pid, server.authz_socket),
                    },
                    per_client,
                    seconds,
                    setup,
                    rounds,
                )
                for who, result in measured.items():
                    results[(who, mix, c)] = result
                fl, fl_cpu = results[("floor", mix, c)]
                sm, sm_cpu = results[("same", mix, c)]
                fu, fu_cpu = results[("fixeduser", mix, c)]
                fl_s, fu_s = summarize(fl.all_latencies()), summarize(fu.all_latencies())
                client_us = 1e6 * (fl.client_cpu + fu.client_cpu) / max(1, fl.calls + fu.calls)
                client_busy = 100 * fl.client_cpu / fl.seconds
                throughput.rows.append(
                    [
                        mix,
                        c,
                        fl.throughput,
                        sm.throughput,
                        fu.throughput,
                        fl.throughput / fu.throughput if fu.throughput else None,
                        sm.throughput / fu.throughput if fu.throughput else None,
                        ms(fl_s.p99),
                        ms(fu_s.p99),
                        1e6 * fl_cpu / max(1, fl.calls),
                        1e6 * sm_cpu / max(1, sm.calls),
                        1e6 * fu_cpu / max(1, fu.calls),
                        client_us,
                        client_busy,
                    ]
                )
                for who, (res, _) in (("floor", (fl, 0)), ("fixeduser", (fu, 0))):
                    bad = {k: v for k, v in {**res.denied, **res.errors}.items() if v}
                    if bad and who == "fixeduser":
                        part.notes.append(f"{mix}, {c} clients: fixeduser denied or failed calls: {bad}")
        session = "docker session"
        for label in KEY_LABELS:

            def q(who: str, c: int, p: str, label: str = label) -> float | None:
                values = results[(who, session, c)][0].latencies.get(label)
                return ms(getattr(summarize(values), p)) if values else None

            if not results[("fixeduser", session, 1)][0].latencies.get(label):
                continue
            latency.rows.append(
                [
                    label,
                    q("floor", 1, "median"),
                    q("floor", 1, "p99"),
                    q("fixeduser", 1, "median"),
                    q("fixeduser", 1, "p99"),
                    q("fixeduser", 8, "p99"),
                    q("fixeduser", 64, "p99"),
                ]
            )
        part.tables += [throughput, latency]
        part.data["memory_kib"] = server.memory()

        part.targets += _targets(throughput, latency)
        part.notes.append(
            "The 'run -v other volume' mix is `docker run --rm -v NAME:/data` with NAME a volume of another driver "
            "(made from the captured plain run): every such create asks the daemon what NAME is, since a volume "
            "another driver made with options mounts what they name (a `local` one: a bind). The daemon here is "
            "bench/daemon_double.py (NAME does not exist), so the figure is fixeduser's own cost of that look-up on a "
            "unix socket."
        )
        part.notes.append(
            "Client cost: 'client CPU busy %' is the load client's CPU time over the floor run's wall time; "
            "below ~90 % the client is not what limits the floor's throughput, and 'client CPU µs/call' "
            "is what the client adds per call on this machine (it shares the 2 cores with the server)."
        )
        return part
    finally:
        floor.stop()
        same.stop()
        server.stop()


def _targets(throughput: Table, latency: Table) -> list[Target]:
    """The create decision's p99, the throughput ratios to both floors, and the rate of creates naming volumes of
    other drivers."""
    session = "docker session"
    targets: list[Target] = []
    create_p99 = max(
        (row[4] for row in latency.rows if str(row[0]).startswith("container.create") and row[0].endswith("Req")),
        default=None,
    )
    targets.append(
        Target(
            "p99 of a container-create AuthZReq decision, 1 client (worst of the create variants)",
            "< 1 ms",
            f"{create_p99:.3f} ms" if create_p99 is not None else "n/a",
            None if create_p99 is None else create_p99 < 1.0,
        )
    )
    worst = max((row for row in throughput.rows if row[0] == session), key=lambda r: r[5] or 0)
    worst_same = max((row for row in throughput.rows if row[0] == session), key=lambda r: r[6] or 0)
    targets.append(
        Target(
            "throughput, docker-session mix: floor/fixeduser (worst concurrency)",
            "≤ 1.5x",
            f"{worst[5]:.2f}x at {worst[1]} clients",
            (worst[5] or 99) <= 1.5,
        )
    )
    targets.append(
        Target(
            "the same against the floor on fixeduser's own transport: decision work alone",
            "report",
            f"{worst_same[6]:.2f}x at {worst_same[1]} clients",
            None,
        )
    )
    other = [row for row in throughput.rows if row[0] == "run -v other volume"]
    targets.append(
        Target(
            "decisions/s when creates name volumes fixeduser does not know (each asks the daemon about it)",
            "report",
            ", ".join(f"{row[4]:,.0f} calls/s at {row[1]} clients ({row[5] or 0:.2f}x the floor)" for row in other),
            None,
        )
    )
    return targets


def main() -> None:
    from bench.common import work_dir  # noqa: PLC0415
    from bench.report import print_part  # noqa: PLC0415

    with work_dir() as tmp:
        print_part(asyncio.run(run(tmp, quick=True)))


if __name__ == "__main__":
    main()
