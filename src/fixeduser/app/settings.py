"""Validated settings for `fixeduser serve`, from the command line and an optional TOML file."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONTROL_SOCKET_NAME = "control.sock"  # in the state folder


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_dir: Path = Path("policies")
    state_dir: Path = Path("/var/lib/fixeduser")
    plugin_dir: Path = Path("/run/docker/plugins")
    spec_dir: Path | None = Field(None, description="also write NAME.spec files here (e.g. /etc/docker/plugins)")
    authz_name: str = Field("fixeduser-authz", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    volume_name: str = Field(
        "fixeduser",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+)?$",
        description="volume driver name; a managed plugin's is its reference, e.g. fixeduser:latest",
    )
    plugin_socket: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.sock$",
        description="serve authz and the volume driver on this one socket in --plugin-dir "
        "(a managed plugin's interface.socket, e.g. fixeduser.sock)",
    )
    backend: Literal["local", "quobyte"] = "local"
    local_root: Path = Path("/srv/fixeduser/volumes")
    quobyte_api_url: str | None = Field(None, description="Quobyte API URL, e.g. http://quobyte-api:7860/")
    quobyte_user: str = Field("admin", description="Quobyte API user (basic auth)")
    quobyte_password_file: Path | None = Field(None, description="file holding the Quobyte API password")
    quobyte_tenant: str = Field("default", description="tenant of new volumes unless -o tenant=...")
    quobyte_configuration: str = Field("BASE", description="volume configuration unless -o configuration=...")
    quobyte_mountpoint: Path = Field(Path("/run/docker/quobyte/mnt"), description="the Quobyte client mount")
    quobyte_registry: str | None = Field(None, description="registry for mount.quobyte (--quobyte-client start)")
    quobyte_client: Literal["start", "existing", "directory"] = Field(
        "start",
        description="start: mount the client if needed; existing: it must be mounted; "
        "directory: a plain directory stands in for it (tests only)",
    )
    quobyte_timeout: float = Field(10.0, gt=0, description="seconds per Quobyte API request")
    quobyte_retries: int = Field(3, ge=0, description="retries of transient Quobyte API failures")
    mount_prune_grace: float = Field(
        180.0, ge=0, description="seconds before a mount record may be judged stale (daemon Mount timeout: 120)"
    )
    reconcile_interval: float = Field(60.0, gt=0, description="seconds between checks for stale mount records")
    consultation_interval: float = Field(
        60.0, gt=0, description="seconds between checks that the daemon still asks fixeduser (also at each reload)"
    )
    ledger_prune_delay: float = Field(
        30.0, ge=0, description="seconds from a container removal to asking the daemon which containers are gone"
    )
    mount_root: Path | None = None
    docker_host: str = "unix:///var/run/docker.sock"
    audit_log: Path | None = None
    local_subject: str = "@local"
    allow_unknown_routes: bool = False
    purge_on_remove: bool = False
    view_idle_seconds: float = Field(
        60.0, ge=0, description="keep an unused identity view mounted this long (a new one starts a bindfs)"
    )
    policy_database: str | None = Field(
        None,
        description="read the policy lines from this PostgreSQL database (URL, e.g. postgresql://user@host/db) "
        "instead of the *.csv files, and reload on every change (LISTEN/NOTIFY); the model stays in --policy-dir",
    )
    state_database: str | None = Field(
        None,
        description="share volume records and 'in use' with every host using this PostgreSQL database (URL); "
        "without it, this host keeps them alone in --state-dir",
    )
    host_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,252}$",
        description="this host's name in the shared database (unique per host; default: the hostname)",
    )
    lease_seconds: float = Field(
        15.0, ge=1, description="a host's mounts count this long after it last renewed its lease (every third of it)"
    )
    cluster_lock_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for a volume's cluster-wide lock before the request fails"
    )
    bindfs_options: tuple[str, ...] = ()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _distinct_names(self) -> ServeSettings:
        if self.authz_name == self.volume_name:
            raise ValueError("--authz-name and --volume-name must differ: each gets its own socket")
        if self.backend == "quobyte" and (self.quobyte_api_url is None or self.quobyte_password_file is None):
            raise ValueError("--backend quobyte needs --quobyte-api-url and --quobyte-password-file")
        return self

    @property
    def effective_mount_root(self) -> Path:
        return self.mount_root or self.state_dir / "mnt"

    @property
    def control_socket(self) -> Path:
        """The plugin's own status/health socket (root only), read by `fixeduser status`."""
        return self.state_dir / CONTROL_SOCKET_NAME

    @property
    def database(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def claim_journal(self) -> Path:
        return self.state_dir / "claims.jsonl"

    def socket(self, name: str) -> Path:
        return self.plugin_dir / f"{name}.sock"

    @property
    def protected_paths(self) -> list[Path]:
        """fixeduser's own folders, which no container may bind (one list for serve and explain)."""
        return [
            self.state_dir,
            self.local_root,
            self.effective_mount_root,
            *([self.quobyte_mountpoint] if self.backend == "quobyte" else []),
            self.policy_dir,
            self.plugin_dir,  # a bind there could replace the plugin's own sockets
            *([self.spec_dir] if self.spec_dir else []),
        ]


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> ServeSettings:
    """File values first, then every command-line option the user actually gave."""
    values: dict[str, Any] = {}
    if config_file is not None:
        with config_file.open("rb") as handle:
            values.update({key.replace("-", "_"): value for key, value in tomllib.load(handle).items()})
    values.update({key: value for key, value in overrides.items() if value is not None})
    return ServeSettings.model_validate(values)
