"""The shared volume state of many hosts, as the rest of fixeduser sees it: its errors and what another host holds.

The PostgreSQL side is `fixeduser.state.cluster_database` (psycopg is imported only when a host is configured
with `--state-database`; the bundled images carry it, single hosts never load it).
"""

from __future__ import annotations

from dataclasses import dataclass

CHANNEL = "fixeduser_volumes"  # NOTIFY channel of changes to the shared volume records


class ClusterError(Exception):
    """A shared-state operation that cannot be done now; the message says why, for the docker user."""


class ClusterUnavailable(ClusterError):
    pass


class ClusterBusy(ClusterError):
    pass


@dataclass(frozen=True)
class RemoteMount:
    """A mount another host holds (and whose lease runs)."""

    host: str
    mount_id: str
    identity: str
    copy_up: bool
