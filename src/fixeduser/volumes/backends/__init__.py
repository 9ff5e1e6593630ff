"""Storage backends for fixed-user volumes."""

from fixeduser.volumes.backends.base import Backend, BackendError, validate_volume_name
from fixeduser.volumes.backends.local import LocalBackend, host_problems, prepare_host_for_fuse

__all__ = [
    "Backend",
    "BackendError",
    "LocalBackend",
    "host_problems",
    "prepare_host_for_fuse",
    "validate_volume_name",
]
