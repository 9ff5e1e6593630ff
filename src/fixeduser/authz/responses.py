"""AuthZRes: what the daemon's answers teach (owners of new containers, exec instances and services), and the
end of the claims and permits a request made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fixeduser.authz.decision import MOUNTING_ACTIONS, Context, Denied, Verdict, parsed
from fixeduser.authz.facts import Facts
from fixeduser.docker_api import (
    BodyError,
    parse_create_response,
    parse_exec_create_response,
    parse_service_create_response,
    parse_service_spec,
)
from fixeduser.docker_api.daemon import is_full_id
from fixeduser.state.handoff import MountGate
from fixeduser.state.ledger import ContainerLedger, ContainerRecord, OwnedRecord
from fixeduser.state.restarts import RestartCandidates


@dataclass
class Responses:
    facts: Facts
    ledger: ContainerLedger
    gate: MountGate
    on_container_removal: Callable[[], None]
    restarts: RestartCandidates | None = None

    async def on_response(self, ctx: Context) -> Verdict:
        action, status = ctx.api.action, ctx.request.status
        if action == "container.create":
            await self.gate.release(ctx.key)
            await self._record_container(ctx)
        elif action in MOUNTING_ACTIONS:
            await self.gate.release(ctx.key)
        elif action in ("volume.create", "volume.remove", "volume.prune"):
            self.gate.revoke(ctx.key)
        elif action in ("container.remove", "container.prune") or (
            action == "container.wait" and ctx.api.query.get("condition") == ["removed"]
        ):
            # The status cannot be trusted (0 for failures, or a 200 flushed before the work is done):
            # the ledger forgets a container only once the daemon no longer lists it.
            self.on_container_removal()
        elif action == "container.update" and self.restarts is not None:
            await self.restarts.update_answered(ctx.key)
        elif action == "exec.create" and status == 201:
            await self._record_exec(ctx)
        elif action == "service.create" and status == 201:
            service_id = parsed(ctx, lambda: parse_service_create_response(ctx.request.response_body),
                                "service create response")  # fmt: skip
            spec = parsed(ctx, lambda: parse_service_spec(ctx.request.body), "service spec")
            await self.ledger.services.record(OwnedRecord(id=service_id, name=spec.name, owner=ctx.subject))
        elif action == "service.remove" and status == 200:
            await self.ledger.services.forget(ctx.api.target or "")
        return Verdict(allow=True, message="response passed")

    async def _record_exec(self, ctx: Context) -> None:
        exec_id = parsed(ctx, lambda: parse_exec_create_response(ctx.request.response_body), "exec create response")
        try:
            container = await self.facts.container(ctx, ctx.api.target or "", inspect=False)
        except Denied:
            container = None
        # The exec belongs to whoever owns its container (the creator when fixeduser has no owner).
        await self.ledger.execs.record(
            OwnedRecord(
                id=exec_id,
                name="",
                owner=container.owner or ctx.subject if container else ctx.subject,
                container=container.id if container else "",
            )
        )

    async def _record_container(self, ctx: Context) -> None:
        """The owner of a new container, by the ID in the daemon's answer: only a created container has one
        (the status may be 0 even then), so whatever the status says, an ID is recorded and an error is not."""
        try:
            container_id = parse_create_response(ctx.request.response_body)
        except (BodyError, ValueError):
            return
        if not is_full_id(container_id):
            return
        name = ctx.api.query.get("name", [""])[0].lstrip("/")
        self.facts.recent.learn(name, container_id)  # the daemon gave it the name, or it would not exist
        await self.ledger.record(ContainerRecord(id=container_id, name=name, owner=ctx.subject))
        self.facts.ask_early(container_id)
