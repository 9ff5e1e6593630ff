"""Questions about volumes that both the authz plugin and the volume driver ask the policy."""

from __future__ import annotations

from fixeduser.policy.compiled import CompiledPolicy
from fixeduser.policy.identity import Identity


class AccessDenied(Exception):
    """A policy refusal; the message is one sentence naming who, what and why."""


def volume_object(volume: str) -> str:
    return f"volume:{volume}"


def identity_object(identity: Identity) -> str:
    return f"identity:{identity.uid}:{identity.gid}"


def require_volume_permission(policy: CompiledPolicy, subject: str, volume: str, action: str) -> None:
    decision = policy.decide(subject, volume_object(volume), action)
    if not decision.allowed:
        raise AccessDenied(
            f"{subject} may not {action} fixeduser volume {volume}: no policy line grants "
            f"`p, <{subject} or one of its roles>, {volume_object(volume)}, {action}`"
        )


def subject_identity(policy: CompiledPolicy, subject: str) -> Identity:
    resolution = policy.identity(subject)
    if resolution.identity is None:
        raise AccessDenied(resolution.error or f"{subject} has no fixed identity")
    return resolution.identity


def require_may_assume(policy: CompiledPolicy, subject: str, identity: Identity) -> None:
    """A subject may act as an identity if it is its own, or the policy grants `assume` on it."""
    own = policy.identity(subject).identity
    if own == identity:
        return
    if policy.decide(subject, identity_object(identity), "assume").allowed:
        return
    raise AccessDenied(
        f"{subject} may not use identity {identity} (its own is {own or 'undefined'}): "
        f"no policy line grants `p, <{subject} or one of its roles>, {identity_object(identity)}, assume`"
    )


def mount_identity(policy: CompiledPolicy, owner: str, volume: str, pinned: Identity | None) -> Identity:
    """The identity `owner`'s containers mount `volume` as, or AccessDenied saying why none."""
    require_volume_permission(policy, owner, volume, "mount")
    if pinned is not None:
        require_may_assume(policy, owner, pinned)
        return pinned
    try:
        return subject_identity(policy, owner)
    except AccessDenied as exc:
        raise AccessDenied(f"{owner} cannot mount fixeduser volume {volume}: {exc}") from None
