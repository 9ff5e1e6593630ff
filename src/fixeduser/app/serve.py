"""Wiring: settings → components → two plugin sockets in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fixeduser.app.control import HealthReport, control_app
from fixeduser.app.metrics import CountingAuditor, CountingBackend, Metrics, PluginGauges
from fixeduser.app.settings import ServeSettings
from fixeduser.app.supervise import Supervisor
from fixeduser.authz.api import authz_handlers
from fixeduser.authz.audit import Auditor, JsonLineAuditor
from fixeduser.authz.authorizer import Authorizer
from fixeduser.authz.consulted import ConsultationCheck
from fixeduser.authz.facts import names_driver
from fixeduser.docker_api.daemon import DaemonClient, DaemonError, DaemonLookups, DaemonWatch
from fixeduser.plugin.server import Handler, PluginCalls, SocketServer
from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.store import PolicyLoader, PolicyStore
from fixeduser.state.cluster import CHANNEL as VOLUMES_CHANNEL
from fixeduser.state.cluster import ClusterError
from fixeduser.state.handoff import ClaimJournal, MountGate
from fixeduser.state.ledger import ContainerLedger
from fixeduser.state.registry import VolumeRegistry
from fixeduser.state.restarts import RestartCandidates
from fixeduser.state.store import StateStore
from fixeduser.volumes.api import ANSWERED_AT_ONCE, volume_handlers
from fixeduser.volumes.backends.base import Backend, ServiceCheck
from fixeduser.volumes.backends.local import LocalBackend
from fixeduser.volumes.driver import VolumeDriver
from fixeduser.volumes.recovery import Recovery
from fixeduser.volumes.resolve import MountIdentityResolver

if TYPE_CHECKING:
    from fixeduser.state.cluster_database import Cluster

log = logging.getLogger(__name__)


@dataclass
class Plugin:
    settings: ServeSettings
    policy: PolicyStore
    store: StateStore
    auditor: JsonLineAuditor
    daemon: DaemonClient
    backend: Backend
    driver: VolumeDriver
    ledger: ContainerLedger
    servers: list[SocketServer]
    metrics: Metrics
    claims: ClaimJournal
    watch: DaemonWatch
    recovery: Recovery
    ledger_pruner: LedgerPruner
    restarts: RestartCandidates
    consulted: ConsultationCheck
    supervisor: Supervisor = field(default_factory=Supervisor)

    async def status(self) -> dict[str, Any]:
        """What `fixeduser status` shows: policy in force, decisions so far, mounts per identity."""
        return {
            "policy": {
                "version": self.policy.current.version,
                "directory": str(self.settings.policy_dir),
                "source": self.policy.loader.description,
                "loaded_at": self.policy.loaded_at,
                "lines": len(self.policy.current.source.lines),
                "reloads": self.policy.reloads,
                "failed_reloads": self.policy.failed_reloads,
                "last_error": self.policy.last_error,
            },
            "decisions": dict(self.auditor.counts),
            "audit": {
                "backlog_lines": self.auditor.backlog_lines,
                "backlog_bytes": self.auditor.backlog_bytes,
                "dropped": self.auditor.dropped,
                "last_error": self.auditor.last_error if self.auditor.failing_since else None,
            },
            "background_tasks": {
                name: {"healthy": t.healthy, "failures": t.failures, "last_error": t.last_error}
                for name, t in self.supervisor.tasks.items()
            },
            "mounts_per_identity": dict(self.driver.registry.mounts_per_identity()),
            "volumes": len(self.driver.registry.names()),
            "containers_known": len(self.ledger),
            "restart_candidates": self.restarts.status(),
            "daemon_asks_fixeduser": {
                "consulted": self.consulted.consulted,
                "since": self.consulted.since,
                "checks": self.consulted.checks,
            },
            "cluster": None if (cluster := self.driver.registry.cluster) is None else cluster.status(),
            "backend": self.backend.name,
        }

    async def health(self) -> HealthReport:
        """Problems that make the plugin unusable (policy in force, storage backend) or degraded (a
        background task failing, an audit log that cannot be written), and notes that do not: a
        rejected policy reload leaves the last good policy in force."""
        problems = [str(p) for p in self.policy.current.problems]
        problems += self.supervisor.problems()
        problems += self.auditor.problems()
        problems += self.consulted.problems()
        notes = []
        if self.auditor.dropped and not self.auditor.failing_since:
            notes.append(f"{self.auditor.dropped} audit records were dropped since the start (see the audit log)")
        if self.policy.last_error is not None:
            notes.append(f"the last policy reload failed; version {self.policy.current.version} stays in force")
            notes.append(self.policy.last_error)
        cluster = self.driver.registry.cluster
        if cluster is not None and not cluster.available:
            problems.append(
                f"shared volume database {cluster.label} unreachable ({cluster.last_error}): volume creates and "
                "removes fail; mounts of known volumes go on from this host's records"
            )
        checks = [self.backend.check]
        inner = getattr(self.backend, "inner", self.backend)  # CountingBackend wraps the real one
        if isinstance(inner, ServiceCheck):
            checks.append(inner.check_service)
        for check in checks:
            try:
                await check()
            except Exception as exc:  # any failure of a check is a health problem, reported as text
                problems.append(f"backend {self.backend.name}: {exc}")
        return HealthReport(problems=problems, notes=notes)


async def _cluster(settings: ServeSettings) -> Cluster | None:
    """The shared volume database, opened (a database that is away now is retried in the background)."""
    if settings.state_database is None:
        return None
    from fixeduser.state.cluster_database import Cluster  # noqa: PLC0415 - psycopg only when configured

    cluster = Cluster(
        settings.state_database,
        settings.host_id,
        lease=settings.lease_seconds,
        lock_timeout=settings.cluster_lock_timeout,
    )
    await cluster.open()
    return cluster


async def _join_cluster(registry: VolumeRegistry) -> None:
    """Before serving: bring this host's volumes on its first start in the cluster, then take the shared records
    (or, with the database away, go on from the cached ones)."""
    cluster = registry.cluster
    if cluster is None:
        return
    try:
        cached = [record for name in registry.names() if (record := registry.get(name)) is not None]
        if brought := await cluster.join(cached):
            log.info("this host's volumes brought into the cluster", extra={"volumes": brought})
        await registry.refresh()
    except ClusterError as exc:
        log.warning("starting from the cached volume records", extra={"error": str(exc)})


async def _catch_up(registry: VolumeRegistry) -> None:
    """Take the shared volume records after a NOTIFY; a database that went away meanwhile is retried by the lease."""
    try:
        await registry.refresh()
    except ClusterError as exc:
        log.info("cannot catch up on volume records now", extra={"error": str(exc)})


def _policy_loader(settings: ServeSettings) -> PolicyLoader | None:
    if settings.policy_database is None:
        return None  # the *.csv files in --policy-dir
    from fixeduser.policy.database import DatabaseLoader  # noqa: PLC0415 - SQLAlchemy only when configured

    return DatabaseLoader(settings.policy_database, settings.policy_dir)


async def build(settings: ServeSettings) -> Plugin:
    policy = PolicyStore(settings.policy_dir, loader=_policy_loader(settings))
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(settings.database)
    ledger, registry = ContainerLedger(store), VolumeRegistry(store, await _cluster(settings))
    claims = ClaimJournal(settings.claim_journal)
    gate = MountGate(journal=claims)
    if restored := gate.restore():
        log.info("claims made before the restart taken back", extra={"claims": restored})
    daemon = DaemonClient(settings.docker_host)
    watch = DaemonWatch(daemon)
    recovery = Recovery(daemon=daemon, ledger=ledger, volumes=registry.names, liveness=watch)
    watch.on_serving(recovery.run_pass)
    restarts = RestartCandidates(store)
    watch.on_serving(restarts.daemon_serving)
    ledger_pruner = LedgerPruner(ledger, daemon, delay=settings.ledger_prune_delay)
    metrics = Metrics()
    backend = CountingBackend(_backend(settings), metrics)
    await backend.check()
    auditor = JsonLineAuditor(settings.audit_log)

    resolver = MountIdentityResolver(
        gate=gate,
        ledger=ledger,
        policy=lambda: policy.current,
        daemon=daemon,
        liveness=watch,
        on_unattributed=recovery.mount_refused,
        candidates=restarts,
    )
    driver = VolumeDriver(
        backend=backend,
        registry=registry,
        gate=gate,
        resolver=resolver,
        policy=lambda: policy.current,
        purge_default=settings.purge_on_remove,
        daemon=daemon,
        view_idle_seconds=settings.view_idle_seconds,
    )
    authorizer = build_authorizer(
        settings,
        policy=lambda: policy.current,
        ledger=ledger,
        registry=registry,
        gate=gate,
        auditor=CountingAuditor(auditor, metrics),
        daemon=daemon,
        is_recovering=recovery.is_starting,
        on_container_removal=ledger_pruner.soon,
        restarts=restarts,
    )
    # Decisions and the volume calls that never wait start at once (plugin.http); the others get tasks, as they
    # bound their waits with asyncio.timeout.
    consulted = ConsultationCheck(daemon.ping, interval=settings.consultation_interval)
    watch.on_serving(consulted.check)
    watch.on_reload(consulted.after_reload)
    authz = metrics.timed_authz(authz_handlers(authorizer, consulted))
    volume = metrics.counted_volume_calls(volume_handlers(driver))
    if settings.plugin_socket is not None:  # a managed plugin: one socket implements both
        both = SocketServer(
            PluginCalls(["authz", "VolumeDriver"], authz | volume, at_once=[*authz, *ANSWERED_AT_ONCE]),
            settings.plugin_dir / settings.plugin_socket,
        )
        servers = [both]
    else:
        servers = [
            _server(settings, settings.authz_name, ["authz"], authz, at_once=authz),
            _server(settings, settings.volume_name, ["VolumeDriver"], volume, at_once=ANSWERED_AT_ONCE),
        ]
    plugin = Plugin(
        settings, policy, store, auditor, daemon, backend, driver, ledger, servers, metrics, claims, watch, recovery,
        ledger_pruner, restarts, consulted,
    )  # fmt: skip
    metrics.watch_background(plugin.supervisor, auditor)
    metrics.watch(
        PluginGauges(
            reloads=lambda: policy.reloads,
            failed_reloads=lambda: policy.failed_reloads,
            policy_problems=lambda: len(policy.current.problems),
            mounts_per_identity=registry.mounts_per_identity,
            volumes=lambda: len(registry.names()),
            daemon_lookups=lambda: daemon.spent,
            consulted=lambda: consulted.consulted,
        )
    )
    control = control_app(status=plugin.status, health=plugin.health, metrics=metrics.render)
    servers.append(SocketServer(control, settings.control_socket, mode=0o600))
    return plugin


def build_authorizer(
    settings: ServeSettings,
    *,
    policy: Callable[[], CompiledPolicy],
    ledger: ContainerLedger,
    registry: VolumeRegistry,
    gate: MountGate,
    auditor: Auditor,
    daemon: DaemonLookups | None,
    is_recovering: Callable[[str], bool] = lambda _: False,
    on_container_removal: Callable[[], None] = lambda: None,
    restarts: RestartCandidates | None = None,
) -> Authorizer:
    """The Authorizer as the settings describe it: one builder for `serve` and `explain`, so both protect the
    same folders, name the same driver and treat the same subjects and routes alike."""
    return Authorizer(
        policy=policy,
        ledger=ledger,
        registry=registry,
        gate=gate,
        auditor=auditor,
        driver_name=settings.volume_name,
        protected_paths=settings.protected_paths,
        daemon=daemon,
        local_subject=settings.local_subject,
        allow_unknown_routes=settings.allow_unknown_routes,
        is_recovering=is_recovering,
        on_container_removal=on_container_removal,
        restarts=restarts,
    )


def _server(
    settings: ServeSettings,
    name: str,
    implements: list[str],
    handlers: Mapping[str, Handler],
    at_once: Collection[str] = (),
) -> SocketServer:
    spec = settings.spec_dir / f"{name}.spec" if settings.spec_dir else None
    return SocketServer(PluginCalls(implements, handlers, at_once), settings.socket(name), spec)


def _backend(settings: ServeSettings) -> Backend:
    if settings.backend == "quobyte":
        from fixeduser.volumes.backends.quobyte import QuobyteBackend, QuobyteClient  # noqa: PLC0415

        assert settings.quobyte_api_url is not None and settings.quobyte_password_file is not None  # validated
        client = QuobyteClient(
            settings.quobyte_api_url,
            user=settings.quobyte_user,
            password=settings.quobyte_password_file.read_text().strip(),
            timeout=settings.quobyte_timeout,
            retries=settings.quobyte_retries,
        )
        return QuobyteBackend(
            client=client,
            mountpoint=settings.quobyte_mountpoint,
            tenant=settings.quobyte_tenant,
            configuration=settings.quobyte_configuration,
            client_mode=settings.quobyte_client,
            registry=settings.quobyte_registry,
        )
    return LocalBackend(
        root=settings.local_root,
        mount_root=settings.effective_mount_root,
        bindfs_options=settings.bindfs_options,
    )


async def serve(settings: ServeSettings) -> None:
    plugin = await build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[bool]] = set()  # referenced until done (a bare task may be collected)

    def reload_on_hangup() -> None:
        task = asyncio.ensure_future(plugin.policy.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)  # reload() reports its own failures (log, /healthz)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hangup)
    supervisor = plugin.supervisor  # every long-lived task: a failure is logged, retried, in /healthz
    supervisor.start("audit writer", plugin.auditor.run)
    supervisor.start("policy watcher", plugin.policy.watch)
    if settings.policy_database is not None:
        from fixeduser.policy.database import CHANNEL  # noqa: PLC0415 - SQLAlchemy only when configured
        from fixeduser.postgres import listen  # noqa: PLC0415

        database = settings.policy_database
        supervisor.start("policy listener", lambda: listen(database, CHANNEL, plugin.policy.reload))
    registry = plugin.driver.registry
    await _join_cluster(registry)
    try:  # before serving: mounts as recorded (a failure here must not keep the daemon from starting)
        await plugin.driver.reconcile()
    except Exception:
        log.exception("reconciling mounts at start failed; mounts are repaired at their next use")
    if (cluster := registry.cluster) is not None:  # after the reconcile: the rows written are this host's truth
        from fixeduser.postgres import listen  # noqa: PLC0415

        try:
            await cluster.renew(registry.all_mounts)  # the lease and this host's mount rows, before serving
        except ClusterError as exc:
            log.warning("serving without the shared volume database for now", extra={"error": str(exc)})

        url = cluster.url
        supervisor.start("cluster lease", lambda: cluster.keep_leased(registry.all_mounts, registry.refresh))
        supervisor.start("volume listener", lambda: listen(url, VOLUMES_CHANNEL, lambda _: _catch_up(registry)))
    for server in plugin.servers:
        await server.start()
    supervisor.start(  # asks the daemon, whose requests pass our authz socket: only once serving
        "mount pruner",
        lambda: plugin.driver.keep_reconciled(grace=settings.mount_prune_grace, interval=settings.reconcile_interval),
    )
    supervisor.start("ledger pruner", lambda: plugin.ledger_pruner.every(600))
    supervisor.start("daemon watch", plugin.watch.run)  # after the sockets: its event stream crosses our authz
    supervisor.start("consultation check", plugin.consulted.every)  # also after the sockets: its ping does too
    ours = settings.volume_name
    supervisor.start(
        "restart candidates", lambda: plugin.restarts.keep_read(plugin.daemon, lambda name: names_driver(name, ours))
    )
    log.info(
        "fixeduser serving",
        extra={
            "policy_version": plugin.policy.current.version,
            "authz": settings.authz_name,
            "volume": settings.volume_name,
        },
    )
    try:
        await stop.wait()
    finally:
        await shutdown(plugin)


class LedgerPruner:
    """Forgets the containers the daemon no longer lists: some time after a removal was asked for (the
    removal's own status cannot be trusted), and now and then (`run -d --rm` ends with no request).

    The removals of one `delay` share one listing of every container. A removed container's record is
    harmless while it waits (IDs are never reused, and every reference is resolved by the daemon), whereas
    a listing per removal cost each `docker run --rm` a daemon request, two AuthZ calls and, on a host
    with thousands of containers, the daemon's work of listing them all (bench/NOTES.md#ledger-pruner)."""

    def __init__(self, ledger: ContainerLedger, daemon: DaemonClient, *, delay: float = 30.0) -> None:
        self._ledger = ledger
        self._daemon = daemon
        self._delay = delay
        self._pending: asyncio.Task[None] | None = None
        self._asked = False  # a removal was asked for that no listing started since has seen

    def soon(self) -> None:
        self._asked = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._after_delay())

    async def _after_delay(self) -> None:
        # A removal asked while a listing runs may not be in it (the listing can be older than the removal): it
        # gets the next one.
        while self._asked:
            await asyncio.sleep(self._delay)  # removals asked meanwhile are pruned together
            self._asked = False
            await self.prune()

    async def every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.prune()

    async def prune(self) -> int:
        known = self._ledger.ids()
        try:
            existing = await self._daemon.container_ids()
        except DaemonError as exc:  # unsure: keep every record
            log.warning("cannot list containers to prune the ledger", extra={"error": str(exc)})
            return 0
        forgotten = await self._ledger.keep_only(existing, among=known)
        if forgotten:
            log.info("forgot removed containers", extra={"count": forgotten})
        return forgotten


async def shutdown(plugin: Plugin, tasks: list[asyncio.Task[None]] | None = None) -> None:
    for server in plugin.servers:
        await server.stop()
    await plugin.supervisor.stop()
    for task in tasks or []:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Views still in use by running containers stay mounted: a restarted plugin picks them up.
    await plugin.driver.unmount_idle_views()
    await plugin.auditor.close()
    await plugin.daemon.close()
    await plugin.backend.close()
    plugin.store.close()
    plugin.claims.close()
    if plugin.driver.registry.cluster is not None:
        await plugin.driver.registry.cluster.close()
    log.info("fixeduser stopped")
