"""Fixed storage identities: the user and group every volume access is done as."""

from __future__ import annotations

import grp
import pwd

from pydantic import BaseModel, ConfigDict


class IdentityError(ValueError):
    """A user or group name that cannot be resolved to a number on this host."""


class Identity(BaseModel):
    """A numeric storage identity. `user`/`group` keep the spelling the policy used."""

    model_config = ConfigDict(frozen=True)

    uid: int
    gid: int
    user: str
    group: str

    # Two spellings of the same numbers (`alice` vs `10001`) are the same identity.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and (self.uid, self.gid) == (other.uid, other.gid)

    def __hash__(self) -> int:
        return hash((self.uid, self.gid))

    @property
    def key(self) -> str:
        """Stable short form used for mount folders and status output: `uid:gid`."""
        return f"{self.uid}:{self.gid}"

    def __str__(self) -> str:
        if self.user == str(self.uid) and self.group == str(self.gid):
            return self.key
        return f"{self.user}({self.uid}):{self.group}({self.gid})"


def resolve_uid(user: str) -> int:
    """A uid from a number or a name known to this host."""
    if user.isdigit():
        return _checked_id(int(user), what="uid")
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise IdentityError(f"unknown user {user!r}: not a number and not in the host's user database") from None


def resolve_gid(group: str) -> int:
    """A gid from a number or a name known to this host."""
    if group.isdigit():
        return _checked_id(int(group), what="gid")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise IdentityError(f"unknown group {group!r}: not a number and not in the host's group database") from None


def resolve_identity(user: str, group: str) -> Identity:
    """Resolve names or numbers to a numeric identity; root is never a fixed identity."""
    uid, gid = resolve_uid(user), resolve_gid(group)
    if uid == 0 or gid == 0:
        raise IdentityError(f"identity {user}:{group} is root: a fixed identity must not be root")
    return Identity(uid=uid, gid=gid, user=user, group=group)


def _checked_id(value: int, *, what: str) -> int:
    # 2**32-1 is (uid_t)-1, which means "no change" to the kernel: never a real identity.
    if not 0 <= value < 2**32 - 1:
        raise IdentityError(f"{what} {value} is out of range")
    return value
