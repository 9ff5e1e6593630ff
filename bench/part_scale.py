"""Part 2: policy scale. Decisions, load time, reload under load and memory at 100 / 10k / 100k lines,
against plain casbin.Enforcer.enforce on the same policy."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path

from bench.client import ALLOW, Connection, encode, run_load
from bench.common import summarize
from bench.plugin import FixeduserServer
from bench.report import Chart, Part, Table, Target
from bench.workload import (
    SESSION_OPS,
    Call,
    Renderer,
    load_capture,
    make_clients,
    scaled_policy_lines,
    write_policy_dir,
)

SIZES = (100, 10_000, 100_000)
CREATE_REQ = ("container.create Req", "container.create -v vol Req", "container.create --mount vol Req")


def _inprocess(policy_dir: Path, users: list[str], casbin_budget: float) -> dict[str, float]:
    """Load times and per-decision cost in this process: fixeduser's index and casbin's enforcer."""
    import casbin  # noqa: PLC0415

    from fixeduser.policy.store import load_policy  # noqa: PLC0415

    out: dict[str, float] = {}
    gc.collect()
    policy = load_policy(policy_dir)  # first load pays for imports and caches; time the second
    del policy
    gc.collect()
    t = time.perf_counter()
    policy = load_policy(policy_dir)
    out["fixeduser_load_s"] = time.perf_counter() - t
    sample = [users[(i * 7919) % len(users)] for i in range(min(len(users), 2000))]
    requests = [(u, "api", "container.create") for u in sample] + [(u, "volume:eng-b1", "mount") for u in sample]
    t = time.perf_counter_ns()
    for r in requests:
        assert policy.decide(*r).allowed
    out["fixeduser_cold_us"] = (time.perf_counter_ns() - t) / len(requests) / 1e3
    t = time.perf_counter_ns()
    for r in requests:
        policy.decide(*r)
    out["fixeduser_warm_us"] = (time.perf_counter_ns() - t) / len(requests) / 1e3
    del policy
    gc.collect()
    t = time.perf_counter()
    enforcer = casbin.Enforcer(str(policy_dir / "model.conf"), str(policy_dir / "policy.csv"))
    out["casbin_load_s"] = time.perf_counter() - t
    times = []
    deadline = time.perf_counter() + casbin_budget
    for i, r in enumerate(requests):
        t0 = time.perf_counter_ns()
        allowed = enforcer.enforce(*r)
        times.append(time.perf_counter_ns() - t0)
        assert allowed, r
        if i >= 3 and time.perf_counter() > deadline:
            break
    s = summarize(times)
    out["casbin_median_ms"], out["casbin_p99_ms"], out["casbin_n"] = s.median / 1e6, s.p99 / 1e6, s.n
    # A denial has no early match: casbin evaluates every line, the index only the subject's own rules.
    denied = [(u, "api", "image.remove") for u in sample]
    times = []
    deadline = time.perf_counter() + casbin_budget / 2
    for i, r in enumerate(denied):
        t0 = time.perf_counter_ns()
        assert not enforcer.enforce(*r)
        times.append(time.perf_counter_ns() - t0)
        if i >= 3 and time.perf_counter() > deadline:
            break
    out["casbin_deny_median_ms"] = summarize(times).median / 1e6
    out["casbin_deny_n"] = len(times)
    del enforcer
    policy = load_policy(policy_dir)
    t = time.perf_counter_ns()
    for r in denied:
        assert not policy.decide(*r).allowed
    out["fixeduser_deny_cold_us"] = (time.perf_counter_ns() - t) / len(denied) / 1e3
    return out


async def _reload_under_load(
    server: FixeduserServer, policy_dir: Path, per_client: list[list[Call]], seconds: float
) -> dict[str, float]:
    """Rewrite the policy (adding a line that lets `canary` list containers) and SIGHUP the plugin while
    clients run; a probe asks for the canary's decision every 2 ms until it flips to allow."""
    canary = Call(
        "/AuthZPlugin.AuthZReq",
        json.dumps(
            {
                "User": "canary",
                "UserAuthNMethod": "TLS",
                "RequestMethod": "GET",
                "RequestUri": "/v1.41/containers/json",
            }
        ).encode(),
        "canary",
    )
    probe = await Connection.open(server.authz_socket)
    _, before = await probe.request(encode(canary))
    assert not ALLOW.search(before), before
    csv = policy_dir / "policy.csv"
    began = time.perf_counter()
    flip: dict[str, float] = {}

    async def trigger() -> None:
        await asyncio.sleep(seconds / 3)
        csv.write_text(csv.read_text() + "g, canary, role:dept0\n")
        flip["write"] = time.perf_counter() - began
        server.sighup()
        while True:
            _, body = await probe.request(encode(canary))
            if ALLOW.search(body):
                flip["allow"] = time.perf_counter() - began
                return
            if time.perf_counter() - began > seconds + 60:
                return
            await asyncio.sleep(0.002)

    load, _ = await asyncio.gather(
        run_load(server.authz_socket, per_client, seconds=seconds, keep_timeline=True), trigger()
    )
    await probe.close()
    out: dict[str, float] = {"reload_s": flip.get("allow", float("nan")) - flip["write"]}
    # run_load's clock starts a little after `began`; align on the write within a few ms
    offset = flip["write"]
    before_l = [ns for t, ns in load.timeline if t < offset - 0.05]
    during = [ns for t, ns in load.timeline if offset <= t <= flip.get("allow", offset)]
    for name, values in (("before", before_l), ("during", during)):
        s = summarize(values)
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"], out[f"{name}_max_ms"], out[f"{name}_n"] = (
            s.median / 1e6,
            s.p99 / 1e6,
            s.max / 1e6,
            s.n,
        )
    return out


async def run(base: Path, *, quick: bool) -> Part:
    part = Part(
        key="scale",
        title="2. Policy scale",
        measures=(
            "Generated policies (bench/workload.py `scaled_policy_lines`: lines/10 users, lines/100 roles in 10 "
            "departments; 100,000 lines = 10,000 users and 1,000 roles; every user has a role and a p2 identity, "
            "the rest are per-user volume permissions). In this process: load/compile time and per-decision cost "
            "of fixeduser's index (cold = first decision of a key, warm = cached) and of plain "
            "`casbin.Enforcer.enforce`. At the socket: the docker-session mix against `fixeduser serve` "
            "with that policy, its memory (VmRSS/VmHWM from /proc), and a reload under load: the policy file "
            "is rewritten and the plugin gets SIGHUP while clients keep sending; reload time is until a probe "
            "sees the new policy decide, and the clients' call latency during the reload shows whether the "
            "event loop stays responsive."
        ),
    )
    seconds = 2.0 if quick else 10.0
    casbin_budget = 2.0 if quick else 15.0
    capture = load_capture()
    decisions = Table(
        key="scale_decisions",
        title="Decision cost by policy size",
        columns=[
            "policy lines",
            "fixeduser load s",
            "casbin load s",
            "fixeduser cold µs",
            "fixeduser warm µs",
            "casbin median ms",
            "casbin p99 ms",
            "fixeduser deny cold µs",
            "casbin deny median ms",
            "socket create p50 ms (1)",
            "socket create p99 ms (1)",
            "socket create p99 ms (8)",
            "calls/s (8)",
        ],
        chart=Chart(
            x="policy lines",
            ys=["socket create p99 ms (1)", "casbin median ms", "casbin deny median ms"],
            ylabel="ms",
            log=True,
        ),
    )
    reload = Table(
        key="scale_reload",
        title="Reload under load and memory",
        columns=[
            "policy lines",
            "reload s",
            "p50 ms before",
            "p99 ms before",
            "p50 ms during",
            "p99 ms during",
            "max ms during",
            "calls during",
            "VmRSS MB",
            "VmHWM MB",
        ],
        chart=Chart(x="policy lines", ys=["p99 ms before", "p99 ms during", "max ms during"], ylabel="ms"),
    )
    for size in SIZES:
        lines, users = scaled_policy_lines(size)
        policy_dir = write_policy_dir(base / f"policy-{size}", lines)
        inproc = _inprocess(policy_dir, users, casbin_budget)
        picked = [users[(i * len(users)) // 8] for i in range(8)]
        server = FixeduserServer(base / f"plugin-{size}", policy_dir).start()
        try:
            renderer = Renderer(capture, server.driver)
            clients = make_clients(8, picked)
            await server.create_volumes(renderer, clients)
            per = [renderer.calls(SESSION_OPS, c) for c in clients]
            one = await run_load(server.authz_socket, per[:1], seconds=seconds)
            eight = await run_load(server.authz_socket, per, seconds=seconds)
            denied = {k: v for k, v in {**one.denied, **eight.denied, **one.errors, **eight.errors}.items() if v}
            if denied:
                part.notes.append(f"{size} lines: denied or failed calls {denied}")

            def creates(res, p):  # type: ignore[no-untyped-def]
                vals = [v for label in CREATE_REQ for v in res.latencies.get(label, [])]
                return getattr(summarize(vals), p) / 1e6

            rl = await _reload_under_load(server, policy_dir, per[:4], seconds=max(seconds, 4.0))
            mem = server.memory()
        finally:
            server.stop()
        decisions.rows.append(
            [
                size,
                inproc["fixeduser_load_s"],
                inproc["casbin_load_s"],
                inproc["fixeduser_cold_us"],
                inproc["fixeduser_warm_us"],
                inproc["casbin_median_ms"],
                inproc["casbin_p99_ms"],
                inproc["fixeduser_deny_cold_us"],
                inproc["casbin_deny_median_ms"],
                creates(one, "median"),
                creates(one, "p99"),
                creates(eight, "p99"),
                eight.throughput,
            ]
        )
        reload.rows.append(
            [
                size,
                rl["reload_s"],
                rl["before_p50_ms"],
                rl["before_p99_ms"],
                rl["during_p50_ms"],
                rl["during_p99_ms"],
                rl["during_max_ms"],
                rl["during_n"],
                mem.get("VmRSS", 0) / 1024,
                mem.get("VmHWM", 0) / 1024,
            ]
        )
        part.data[str(size)] = {"inprocess": inproc, "reload": rl, "memory_kib": mem}
    part.tables += [decisions, reload]
    big_d, big_r = decisions.rows[-1], reload.rows[-1]
    part.targets += [
        Target(
            "socket p99 of container-create AuthZReq at 100,000 lines, 1 client",
            "< 1 ms",
            f"{big_d[10]:.3f} ms",
            big_d[10] < 1.0,
        ),
        Target("reload of 100,000 lines (write → new policy decides)", "< 2 s", f"{big_r[1]:.2f} s", big_r[1] < 2.0),
        Target(
            "decisions during that reload: worst call latency",
            "not blocked (< 100 ms)",
            f"max {big_r[6]:.1f} ms, p99 {big_r[5]:.1f} ms",
            big_r[6] < 100,
        ),
        Target(
            "plugin memory at 100,000 lines (VmHWM, includes the reload)",
            "< 200 MB",
            f"{big_r[9]:.0f} MB",
            big_r[9] < 200,
        ),
    ]
    part.notes.append(
        "casbin runs are capped by time; at 100,000 lines: "
        f"n = {part.data[str(SIZES[-1])]['inprocess']['casbin_n']:.0f} allowed and "
        f"{part.data[str(SIZES[-1])]['inprocess']['casbin_deny_n']:.0f} denied decisions. "
        "Allowed decisions stop at the first matching line (the department rules come first in "
        "the generated file), denials scan the whole policy."
    )
    return part


def main() -> None:
    from bench.common import work_dir  # noqa: PLC0415
    from bench.report import print_part  # noqa: PLC0415

    with work_dir() as tmp:
        print_part(asyncio.run(run(tmp, quick=True)))


if __name__ == "__main__":
    main()
