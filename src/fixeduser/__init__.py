"""fixeduser: fixed-user volumes for Docker, enforced by an authorization plugin."""

from fixeduser.policy.identity import Identity, IdentityError, resolve_identity

__all__ = ["Identity", "IdentityError", "resolve_identity"]
