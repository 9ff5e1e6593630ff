"""Prometheus metrics for `fixeduser serve`, served as `GET /metrics` on the control socket.

The decision path only bumps plain in-memory tallies (`DecisionTally`: a dict increment and a
bisect per call, no locks; prometheus-client's labelled children cost a third of a trivial
decision: bench/NOTES.md#metrics-tally) that become Prometheus families when scraped. Volume calls and backend
errors are rare and use prometheus-client counters. Values the plugin already keeps (policy
reloads, active mounts per identity, policy problems) are read only when Prometheus scrapes,
through callables, so nothing extra runs per request.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from fixeduser.app.supervise import Supervisor
from fixeduser.authz.audit import Auditor, AuditRecord, JsonLineAuditor
from fixeduser.plugin.server import Handler
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends.base import Backend, BackendError

__all__ = ["CONTENT_TYPE", "CountingAuditor", "CountingBackend", "Metrics", "PluginGauges"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Decisions are in-memory look-ups (sub-millisecond) unless the daemon is asked about a container.
DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Volume calls may start a bindfs or wait for the hand-off gate.
VOLUME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PluginGauges:
    """Read-at-scrape values of a running plugin, given as callables (no polling, no hooks)."""

    def __init__(
        self,
        *,
        reloads: Callable[[], int],
        failed_reloads: Callable[[], int],
        policy_problems: Callable[[], int],
        mounts_per_identity: Callable[[], Mapping[str, int]],
        volumes: Callable[[], int],
        daemon_lookups: Callable[[], Mapping[str, tuple[int, float]]] = dict,
        consulted: Callable[[], bool | None] = lambda: None,
    ) -> None:
        self.reloads = reloads
        self.failed_reloads = failed_reloads
        self.policy_problems = policy_problems
        self.mounts_per_identity = mounts_per_identity
        self.volumes = volumes
        self.daemon_lookups = daemon_lookups
        self.consulted = consulted


class _GaugeCollector(Collector):
    def __init__(self, gauges: PluginGauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        g = self._gauges
        yield CounterMetricFamily(
            "fixeduser_policy_reloads", "Policy reloads that replaced the policy in force", value=g.reloads()
        )
        yield CounterMetricFamily(
            "fixeduser_policy_reload_failures",
            "Policy reloads rejected (the previous policy stayed in force)",
            value=g.failed_reloads(),
        )
        yield GaugeMetricFamily(
            "fixeduser_policy_problems", "Problems in the policy in force (0 when usable)", value=g.policy_problems()
        )
        if (consulted := g.consulted()) is not None:
            yield GaugeMetricFamily(
                "fixeduser_daemon_asks_authz",
                "1 while the daemon asks fixeduser about its requests, 0 once a check found it does not",
                value=int(consulted),
            )
        mounts = GaugeMetricFamily(
            "fixeduser_active_mounts", "Container mounts of fixeduser volumes per storage identity", labels=["identity"]
        )
        for identity, count in sorted(g.mounts_per_identity().items()):
            mounts.add_metric([identity], count)
        yield mounts
        yield GaugeMetricFamily("fixeduser_volumes", "Volumes known to the driver", value=g.volumes())
        asked = CounterMetricFamily("fixeduser_daemon_lookups", "Look-ups sent to the Docker daemon", labels=["what"])
        seconds = CounterMetricFamily(
            "fixeduser_daemon_lookup_seconds", "Seconds spent waiting for the Docker daemon's answers", labels=["what"]
        )
        for what, (count, spent) in sorted(g.daemon_lookups().items()):
            asked.add_metric([what], count)
            seconds.add_metric([what], spent)
        yield asked
        yield seconds


class _BackgroundCollector(Collector):
    """The supervised background tasks and the audit writer's backlog, read at each scrape."""

    def __init__(self, supervisor: Supervisor, auditor: JsonLineAuditor) -> None:
        self._supervisor, self._auditor = supervisor, auditor

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "fixeduser_task_failures", "Times a background task failed (raised or returned)", labels=["task"]
        )
        healthy = GaugeMetricFamily(
            "fixeduser_task_healthy", "1 while a background task runs without recent failure, else 0", labels=["task"]
        )
        for name, state in sorted(self._supervisor.tasks.items()):
            failures.add_metric([name], state.failures)
            healthy.add_metric([name], 1 if state.healthy else 0)
        yield failures
        yield healthy
        a = self._auditor
        yield CounterMetricFamily(
            "fixeduser_audit_dropped_records", "Audit records dropped because the backlog was full", value=a.dropped
        )
        yield CounterMetricFamily(
            "fixeduser_audit_write_failures", "Failed writes to the audit log (each retried)", value=a.write_failures
        )
        yield GaugeMetricFamily("fixeduser_audit_backlog_lines", "Audit lines not yet written", value=a.backlog_lines)
        yield GaugeMetricFamily(
            "fixeduser_audit_backlog_bytes", "Bytes of audit lines not yet written", value=a.backlog_bytes
        )
        yield GaugeMetricFamily(
            "fixeduser_audit_writable",
            "1 unless the last write to the audit log failed",
            value=0 if a.failing_since else 1,
        )


class LatencyHistogram:
    """A Prometheus histogram with one label, kept as plain counts (a bisect per observation).

    Only the event loop updates it and scrapes run on the same loop, so no lock is needed."""

    def __init__(self, name: str, documentation: str, label: str, buckets: tuple[float, ...]) -> None:
        self._name, self._documentation, self._label, self._buckets = name, documentation, label, buckets
        self._counts: dict[str, list[int]] = {}  # label value -> count per bucket (the last one is +Inf)
        self._sums: defaultdict[str, float] = defaultdict(float)

    def observe(self, key: str, seconds: float) -> None:
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (len(self._buckets) + 1)
        counts[bisect.bisect_left(self._buckets, seconds)] += 1
        self._sums[key] += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        bounds = [*map(str, self._buckets), "+Inf"]
        for key, counts in sorted(self._counts.items()):
            cumulative = list(zip(bounds, itertools.accumulate(counts), strict=True))
            family.add_metric([key], cumulative, sum_value=self._sums[key])
        return family


class DecisionTally(Collector):
    """Decisions by (phase, action, result), answer latency per phase, and volume call latency."""

    def __init__(self) -> None:
        self.decisions: Tally[tuple[str, str, str]] = Tally()
        self.latency = LatencyHistogram(
            "fixeduser_decision_seconds",
            "Time to answer an AuthZReq/AuthZRes call, parsing included",
            "phase",
            DECISION_BUCKETS,
        )
        self.volume_latency = LatencyHistogram(
            "fixeduser_volume_call_seconds", "Time to answer a VolumeDriver call", "call", VOLUME_BUCKETS
        )

    def count(self, phase: str, action: str, allow: bool) -> None:
        self.decisions[phase, action, "allow" if allow else "deny"] += 1

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "fixeduser_decisions",
            "Authorization decisions by phase (request/response), Docker action and result",
            labels=["phase", "action", "result"],
        )
        for labels, value in sorted(self.decisions.items()):
            decisions.add_metric(list(labels), value)
        yield decisions
        yield self.latency.family()
        yield self.volume_latency.family()


class Metrics:
    """The plugin's metrics in their own registry (not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tally = DecisionTally()
        self.registry.register(self.tally)
        self.volume_calls = Counter(
            "fixeduser_volume_calls",
            "VolumeDriver calls by name and result (ok/error)",
            ["call", "result"],
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "fixeduser_backend_errors",
            "Storage backend failures by backend and operation",
            ["backend", "operation"],
            registry=self.registry,
        )

    def watch(self, gauges: PluginGauges) -> None:
        """Expose `gauges` at every scrape."""
        self.registry.register(_GaugeCollector(gauges))

    def watch_background(self, supervisor: Supervisor, auditor: JsonLineAuditor) -> None:
        """Expose the supervised tasks' failures and health, and the audit backlog, at every scrape."""
        self.registry.register(_BackgroundCollector(supervisor, auditor))

    def record_decision(self, record: AuditRecord) -> None:
        self.tally.count(record.phase, record.action, record.allow)

    def timed_authz(self, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
        """`handlers` (AuthZPlugin.AuthZReq/AuthZRes) with their latency observed."""
        observe = self.tally.latency.observe

        def wrap(method: str, handler: Handler) -> Handler:
            phase = "response" if method.endswith("AuthZRes") else "request"

            async def timed(payload: dict[str, Any]) -> dict[str, Any]:
                began = time.perf_counter()
                try:
                    return await handler(payload)
                finally:
                    observe(phase, time.perf_counter() - began)

            return timed

        return {method: wrap(method, handler) for method, handler in handlers.items()}

    def counted_volume_calls(self, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
        """`handlers` (VolumeDriver.*) timed, and each answer counted as ok or error (`Err` set)."""
        observe = self.tally.volume_latency.observe

        def wrap(method: str, handler: Handler) -> Handler:
            call = method.rsplit(".", 1)[-1]
            ok, error = self.volume_calls.labels(call, "ok"), self.volume_calls.labels(call, "error")

            async def counted(payload: dict[str, Any]) -> dict[str, Any]:
                began = time.perf_counter()
                try:
                    answer = await handler(payload)
                except BaseException:
                    error.inc()
                    raise
                finally:
                    observe(call, time.perf_counter() - began)
                (error if answer.get("Err") else ok).inc()
                return answer

            return counted

        return {method: wrap(method, handler) for method, handler in handlers.items()}

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class CountingAuditor:
    """An `Auditor` that counts each decision, then hands the record on (still no I/O here)."""

    def __init__(self, inner: Auditor, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def record(self, record: AuditRecord) -> None:
        self._metrics.record_decision(record)
        self._inner.record(record)


class CountingBackend:
    """A `Backend` that counts the `BackendError`s of the backend it wraps, by operation."""

    def __init__(self, inner: Backend, metrics: Metrics) -> None:
        self._inner = inner
        self._errors = metrics.backend_errors
        self.name: str = inner.name
        self.scope: Literal["local", "global"] = inner.scope

    @property
    def inner(self) -> Backend:
        return self._inner

    def _failed(self, operation: str) -> None:
        self._errors.labels(self.name, operation).inc()

    async def check(self) -> None:
        try:
            await self._inner.check()
        except BackendError:
            self._failed("check")
            raise

    async def create_volume(
        self, volume: str, *, owner: Identity, mode: int, options: Mapping[str, str] | None = None
    ) -> None:
        try:
            if options is None:
                await self._inner.create_volume(volume, owner=owner, mode=mode)
            else:
                await self._inner.create_volume(volume, owner=owner, mode=mode, options=options)
        except BackendError:
            self._failed("create_volume")
            raise

    async def remove_volume(self, volume: str, *, purge: bool, options: Mapping[str, str] | None = None) -> None:
        try:
            if options is None:
                await self._inner.remove_volume(volume, purge=purge)
            else:
                await self._inner.remove_volume(volume, purge=purge, options=options)
        except BackendError:
            self._failed("remove_volume")
            raise

    async def set_top_folder(self, volume: str, *, owner: Identity, mode: int, only_if_empty: bool = False) -> bool:
        try:
            return await self._inner.set_top_folder(volume, owner=owner, mode=mode, only_if_empty=only_if_empty)
        except BackendError:
            self._failed("set_top_folder")
            raise

    async def volume_exists(self, volume: str) -> bool:
        try:
            return await self._inner.volume_exists(volume)
        except BackendError:
            self._failed("volume_exists")
            raise

    async def mount_identity(self, identity: Identity) -> Path:
        try:
            return await self._inner.mount_identity(identity)
        except BackendError:
            self._failed("mount_identity")
            raise

    def volume_path(self, identity: Identity, volume: str) -> Path:
        try:
            return self._inner.volume_path(identity, volume)
        except BackendError:
            self._failed("volume_path")
            raise

    async def unmount_identity(self, identity: Identity) -> None:
        try:
            await self._inner.unmount_identity(identity)
        except BackendError:
            self._failed("unmount_identity")
            raise

    async def mounted_identities(self) -> list[str]:
        try:
            return await self._inner.mounted_identities()
        except BackendError:
            self._failed("mounted_identities")
            raise

    async def close(self) -> None:
        await self._inner.close()
