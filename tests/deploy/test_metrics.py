"""Prometheus metrics: counters and histograms on the decision path, gauges read at scrape time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixeduser.app.metrics import CountingAuditor, CountingBackend, Metrics, PluginGauges
from fixeduser.authz.audit import AuditRecord
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import BackendError

ALICE = Identity(uid=10001, gid=10000, user="10001", group="10000")


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (name, sorted labels): parses the real text output."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def record(*, allow: bool, action: str = "container:create", phase: str = "request") -> AuditRecord:
    return AuditRecord(
        time=0.0, phase=phase, user="alice", auth="TLS", method="POST", path="/containers/create",
        action=action, target=None, allow=allow, reason="", rule=None, policy="v1",
    )  # fmt: skip


class ListAuditor:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)


def test_counting_auditor_counts_by_phase_action_result_and_forwards() -> None:
    """Each audited decision increments decisions_total{phase,action,result} and still reaches the audit log."""
    metrics, inner = Metrics(), ListAuditor()
    auditor = CountingAuditor(inner, metrics)
    auditor.record(record(allow=True))
    auditor.record(record(allow=False))
    auditor.record(record(allow=False))
    auditor.record(record(allow=True, action="volume:create", phase="response"))
    s = samples(metrics)
    key = "fixeduser_decisions_total"
    assert s[(key, (("action", "container:create"), ("phase", "request"), ("result", "allow")))] == 1
    assert s[(key, (("action", "container:create"), ("phase", "request"), ("result", "deny")))] == 2
    assert s[(key, (("action", "volume:create"), ("phase", "response"), ("result", "allow")))] == 1
    assert len(inner.records) == 4


async def test_timed_authz_observes_latency_per_phase() -> None:
    """AuthZReq and AuthZRes answers are timed into decision_seconds{phase}; answers pass unchanged."""
    metrics = Metrics()

    async def answer(_: dict[str, Any]) -> dict[str, Any]:
        return {"Allow": True}

    handlers = metrics.timed_authz({"AuthZPlugin.AuthZReq": answer, "AuthZPlugin.AuthZRes": answer})
    assert await handlers["AuthZPlugin.AuthZReq"]({}) == {"Allow": True}
    await handlers["AuthZPlugin.AuthZReq"]({})
    await handlers["AuthZPlugin.AuthZRes"]({})
    s = samples(metrics)
    assert s[("fixeduser_decision_seconds_count", (("phase", "request"),))] == 2
    assert s[("fixeduser_decision_seconds_count", (("phase", "response"),))] == 1
    assert s[("fixeduser_decision_seconds_bucket", (("le", "+Inf"), ("phase", "request")))] == 2


async def test_volume_calls_counted_ok_and_error() -> None:
    """A VolumeDriver answer with a non-empty Err counts as an error, an empty Err as ok; each call is timed."""
    metrics = Metrics()

    async def ok(_: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.03)  # a slow mount (a bindfs starting)
        return {"Err": "", "Mountpoint": "/x"}

    async def fail(_: dict[str, Any]) -> dict[str, Any]:
        return {"Err": "no such volume"}

    handlers = metrics.counted_volume_calls({"VolumeDriver.Mount": ok, "VolumeDriver.Remove": fail})
    await handlers["VolumeDriver.Mount"]({})
    await handlers["VolumeDriver.Remove"]({})
    s = samples(metrics)
    assert s[("fixeduser_volume_calls_total", (("call", "Mount"), ("result", "ok")))] == 1
    assert s[("fixeduser_volume_calls_total", (("call", "Remove"), ("result", "error")))] == 1
    mount = (("call", "Mount"),)
    assert s[("fixeduser_volume_call_seconds_count", mount)] == 1
    assert s[("fixeduser_volume_call_seconds_sum", mount)] >= 0.03
    assert s[("fixeduser_volume_call_seconds_bucket", (("call", "Mount"), ("le", "0.025")))] == 0
    assert s[("fixeduser_volume_call_seconds_bucket", (("call", "Mount"), ("le", "+Inf")))] == 1


class FailingBackend:
    name = "fake"
    scope: Literal["local", "global"] = "local"

    async def check(self) -> None:
        raise BackendError("bindfs missing")

    async def create_volume(self, volume: str, *, owner: Identity, mode: int) -> None:
        return None

    async def remove_volume(self, volume: str, *, purge: bool) -> None:
        return None

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        return True

    async def volume_exists(self, volume: str) -> bool:
        return True

    async def mount_identity(self, identity: Identity) -> Path:
        raise BackendError("fusermount3: could not determine username")

    def volume_path(self, identity: Identity, volume: str) -> Path:
        return Path("/v") / volume

    async def unmount_identity(self, identity: Identity) -> None:
        return None

    async def mounted_identities(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None


async def test_counting_backend_counts_backend_errors_by_operation() -> None:
    """BackendErrors are counted by backend and operation and re-raised; successes are not counted."""
    metrics = Metrics()
    backend = CountingBackend(FailingBackend(), metrics)
    assert backend.name == "fake" and backend.scope == "local"
    await backend.create_volume("v", owner=ALICE, mode=0o770)
    with pytest.raises(BackendError):
        await backend.mount_identity(ALICE)
    with pytest.raises(BackendError):
        await backend.mount_identity(ALICE)
    with pytest.raises(BackendError):
        await backend.check()
    s = samples(metrics)
    assert s[("fixeduser_backend_errors_total", (("backend", "fake"), ("operation", "mount_identity")))] == 2
    assert s[("fixeduser_backend_errors_total", (("backend", "fake"), ("operation", "check")))] == 1
    assert ("fixeduser_backend_errors_total", (("backend", "fake"), ("operation", "create_volume"))) not in s


def test_gauges_are_read_at_scrape_time() -> None:
    """Policy reloads/failures, problems, volumes and active mounts per identity show the values of the moment."""

    class State:
        reloads, failed, mounts = 1, 0, {"10001:10000": 2}

    state = State()
    metrics = Metrics()
    metrics.watch(
        PluginGauges(
            reloads=lambda: state.reloads,
            failed_reloads=lambda: state.failed,
            policy_problems=lambda: 0,
            mounts_per_identity=lambda: state.mounts,
            volumes=lambda: 3,
        )
    )
    s = samples(metrics)
    assert s[("fixeduser_policy_reloads_total", ())] == 1
    assert s[("fixeduser_active_mounts", (("identity", "10001:10000"),))] == 2
    state.reloads, state.failed, state.mounts = 2, 1, {"10002:10000": 1}
    s = samples(metrics)
    assert s[("fixeduser_policy_reloads_total", ())] == 2
    assert s[("fixeduser_policy_reload_failures_total", ())] == 1
    assert s[("fixeduser_volumes", ())] == 3
    assert ("fixeduser_active_mounts", (("identity", "10001:10000"),)) not in s
    assert s[("fixeduser_active_mounts", (("identity", "10002:10000"),))] == 1


def test_decision_latency_lands_in_the_right_buckets() -> None:
    """Buckets are `le` (upper bound included), cumulative in the exposition, with the sum of all observations."""
    metrics = Metrics()
    for seconds in (0.0005, 0.0006, 0.003, 9.0):
        metrics.tally.latency.observe("request", seconds)
    s = samples(metrics)

    def bucket(le: str) -> float:
        return s[("fixeduser_decision_seconds_bucket", (("le", le), ("phase", "request")))]

    assert (bucket("0.0005"), bucket("0.001"), bucket("0.0025"), bucket("0.005"), bucket("5.0")) == (1, 2, 2, 3, 3)
    assert bucket("+Inf") == 4
    assert s[("fixeduser_decision_seconds_sum", (("phase", "request"),))] == pytest.approx(9.0041)
