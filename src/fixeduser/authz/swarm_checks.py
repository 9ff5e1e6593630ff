"""Requests that concern swarm services and their tasks: a service is its creator's, a task its service's
creator's, and a service spec is checked like a container create (its tasks start with no API request)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fixeduser.authz.container_checks import deny_unknown_mounts
from fixeduser.authz.decision import (
    OTHERS_OBJECT,
    SERVICE_OWNED_ACTIONS,
    TASK_OWNED_ACTIONS,
    Context,
    check_owned,
    parsed,
    require_escalations,
)
from fixeduser.authz.facts import Facts
from fixeduser.authz.volume_checks import VolumeChecks, named_mount_volumes
from fixeduser.docker_api import parse_service_spec
from fixeduser.docker_api.daemon import HOST_NETWORK
from fixeduser.policy.escalations import Escalation, service_escalations
from fixeduser.state.ledger import ContainerLedger


@dataclass
class SwarmChecks:
    facts: Facts
    ledger: ContainerLedger
    volumes: VolumeChecks
    protected: tuple[Path, ...]

    async def check(self, ctx: Context) -> None:
        action = ctx.api.action
        if action in SERVICE_OWNED_ACTIONS:
            check_owned(ctx, self.ledger.services.find(ctx.api.target or ""), "service")
        if action in ("service.create", "service.update"):
            await self._check_spec(ctx)
        elif action in TASK_OWNED_ACTIONS:
            await self._check_task(ctx)

    async def _check_spec(self, ctx: Context) -> None:
        spec = parsed(ctx, lambda: parse_service_spec(ctx.request.body), "service spec")
        mounts = spec.container.mounts if spec.container else []
        deny_unknown_mounts(ctx, mounts)
        found = service_escalations(
            spec,
            protected=self.protected,
            is_fixeduser_volume=self.facts.is_ours,
            is_our_driver=self.facts.is_our_driver,
        )
        # The daemon resolves each target by ID, name or ID prefix, locally too (a predefined network's
        # local ID means its swarm namesake): ask it what each one is, like `GET /networks/{id}` would.
        for target in sorted(set(spec.networks) - {HOST_NETWORK}):
            if await self.facts.is_host_network(ctx, target, missing_ok=False):
                found.append(Escalation(kind="namespaces", detail=f"network {target} (the host network)"))
        # Tasks placed on this host use its volumes of those names; other hosts' volumes cannot be asked about.
        found += await self.volumes.chosen_by_options(ctx, named_mount_volumes(mounts))
        require_escalations(ctx, found, "run a service")

    async def _check_task(self, ctx: Context) -> None:
        """A task belongs to its service's creator; the daemon says which service a task ID is of."""
        if ctx.policy.decide(ctx.subject, OTHERS_OBJECT, ctx.api.action).allowed:
            return  # anyone's task: no need to ask whose it is
        task = await self.facts.task(ctx, ctx.api.target or "")
        service = self.ledger.services.find(task.service_id) if task is not None and task.service_id else None
        check_owned(ctx, service, "service's task")
