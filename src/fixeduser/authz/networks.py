"""Network references in requests: which container a connect/disconnect acts on, and which
network names fixeduser must ask the daemon about because they could mean the host network."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fixeduser.docker_api import (
    MISSING_BODY,
    BodyError,
    JsonObject,
    decode,
    endpoint_sysctls,
    list_of_str_field,
    obj_field,
    str_field,
)
from fixeduser.docker_api.daemon import HOST_NETWORK

# NetworkMode values the daemon never looks up as a network (runconfig's IsDefault/IsBridge/IsNone/IsHost);
# "container:<ref>" is another container's namespace, checked on its own.
PREDEFINED_MODES = frozenset({"", "default", "bridge", "none", HOST_NETWORK})


class NetworkAttach(BaseModel):
    """`POST /networks/{id}/connect` (types.NetworkConnect) or `.../disconnect` (types.NetworkDisconnect)."""

    model_config = ConfigDict(frozen=True)

    container: str  # the daemon resolves it like any container reference: ID, name, ID prefix
    links: list[str] = Field(default_factory=list)  # EndpointConfig.Links ("container[:alias]"), connect only
    sysctls: str | None = None  # EndpointConfig.DriverOpts[ENDPOINT_SYSCTLS_OPT], connect only (API 1.46+)


def parse_network_attach(body: bytes, *, connect: bool) -> NetworkAttach:
    """Read a connect/disconnect body as the daemon's Go decoder does (folded keys, last one wins)."""
    if not body:
        raise BodyError(MISSING_BODY)
    top = decode(body)
    if not isinstance(top, JsonObject):
        raise BodyError("request body must be a JSON object")
    if not connect:  # NetworkDisconnect has no EndpointConfig: the daemon ignores one
        return NetworkAttach(container=str_field(top, "Container"))
    endpoint = obj_field(top, "EndpointConfig") or JsonObject()
    return NetworkAttach(
        container=str_field(top, "Container"),
        links=list_of_str_field(endpoint, "Links"),
        sysctls=endpoint_sysctls(endpoint),
    )


def network_mode_reference(mode: str) -> str | None:
    """The network a container's NetworkMode names by ID, name or ID prefix, if the daemon looks one up.

    The daemon picks the host's namespace only for the literal `host` (measured on 20.10: the host
    network's ID gives the container a private namespace attached to the `host` network), but a
    daemon that resolved the name first would not, so fixeduser treats any reference to the host
    network as `--network host`.
    """
    if mode in PREDEFINED_MODES or (mode.partition(":")[0] == "container" and ":" in mode):
        return None
    return mode
