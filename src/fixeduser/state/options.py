"""Volume create options (`docker volume create -o k=v`), validated with messages that teach."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from fixeduser.policy.identity import Identity, IdentityError, resolve_identity

VALID_OPTIONS = {
    "user": "pin the volume to this user (name or uid); needs group too",
    "group": "pin the volume to this group (name or gid); needs user too",
    "mode": "permissions of the volume's top folder, octal, default 0770",
    "purge": "true: delete the data when the volume is removed (default: keep it, or --purge-on-remove)",
    "tenant": "quobyte backend only: the Quobyte tenant of the volume (default: --quobyte-tenant)",
    "configuration": "quobyte backend only: the Quobyte volume configuration (default: --quobyte-configuration)",
}
BACKEND_OPTIONS = {"tenant": "quobyte", "configuration": "quobyte"}
_QUOBYTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
DEFAULT_MODE = 0o770


class OptionError(ValueError):
    """Options a fixeduser volume cannot be created with."""


class VolumeOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    pinned: Identity | None = None
    mode: int = DEFAULT_MODE
    purge: bool | None = None  # None: not chosen at create, the plugin's --purge-on-remove decides
    tenant: str | None = None
    configuration: str | None = None


def valid_options_help() -> str:
    return "; ".join(f"{name} ({meaning})" for name, meaning in VALID_OPTIONS.items())


def parse_options(options: Mapping[str, str], *, backend: str | None = None) -> VolumeOptions:
    """Validate create options; with `backend`, also refuse options meant for another backend."""
    unknown = sorted(set(options) - set(VALID_OPTIONS))
    if unknown:
        raise OptionError(f"unknown fixeduser volume option(s) {', '.join(unknown)}; valid: {valid_options_help()}")
    misplaced = sorted(name for name in options if backend and BACKEND_OPTIONS.get(name, backend) != backend)
    if misplaced:
        raise OptionError(
            f"option(s) {', '.join(misplaced)} only apply to the {BACKEND_OPTIONS[misplaced[0]]} backend; "
            f"this plugin runs the {backend} backend"
        )
    return VolumeOptions(
        pinned=_pinned(options.get("user"), options.get("group")),
        mode=_mode(options.get("mode")),
        purge=_flag("purge", options["purge"]) if "purge" in options else None,
        tenant=_quobyte_name("tenant", options.get("tenant")),
        configuration=_quobyte_name("configuration", options.get("configuration")),
    )


def _quobyte_name(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not _QUOBYTE_NAME.fullmatch(value):
        raise OptionError(f"{name}={value!r} is not a valid name: use letters, digits, '_', '.', ':', '-'")
    return value


def _pinned(user: str | None, group: str | None) -> Identity | None:
    if user is None and group is None:
        return None
    if not user or not group:
        raise OptionError("a pinned fixeduser volume needs both -o user=U and -o group=G")
    try:
        return resolve_identity(user, group)
    except IdentityError as exc:
        raise OptionError(f"cannot pin volume: {exc}") from None


def _mode(value: str | None) -> int:
    if value is None:
        return DEFAULT_MODE
    try:
        mode = int(value, 8)
    except ValueError:
        raise OptionError(f"mode={value!r} is not an octal number such as 0770") from None
    if not 0 <= mode <= 0o7777:
        raise OptionError(f"mode={value} is out of range (0000-7777)")
    if mode & 0o700 != 0o700:
        raise OptionError(f"mode={value} must give the owner rwx (the volume's identity needs it)")
    return mode


def _flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise OptionError(f"{name}={value!r} must be true or false")
