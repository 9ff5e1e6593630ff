"""The Docker Engine API as data: routes, request bodies and Go-style JSON decoding.

No policy lives here: this package only says what a request *is*, the way the daemon reads it.
"""

from fixeduser.docker_api.gojson import (
    BodyError,
    JsonObject,
    bool_field,
    decode,
    field,
    go_fold,
    key_set_field,
    list_of_str_field,
    obj_field,
    obj_list_field,
    opt_bool_field,
    opt_list_of_str_field,
    str_field,
    str_map_field,
)
from fixeduser.docker_api.requests import (
    MISSING_BODY,
    Bind,
    ContainerCreate,
    ExecCreate,
    HostConfig,
    MountSpec,
    VolumeCreate,
    parse_bind,
    parse_container_create,
    parse_create_response,
    parse_exec_create,
    parse_volume_create,
)
from fixeduser.docker_api.routes import ROUTES, ApiRequest, Route, classify

__all__ = [
    "MISSING_BODY",
    "ROUTES",
    "ApiRequest",
    "Bind",
    "BodyError",
    "ContainerCreate",
    "ExecCreate",
    "HostConfig",
    "JsonObject",
    "MountSpec",
    "Route",
    "VolumeCreate",
    "bool_field",
    "classify",
    "decode",
    "field",
    "go_fold",
    "key_set_field",
    "list_of_str_field",
    "obj_field",
    "obj_list_field",
    "opt_bool_field",
    "opt_list_of_str_field",
    "parse_bind",
    "parse_container_create",
    "parse_create_response",
    "parse_exec_create",
    "parse_volume_create",
    "str_field",
    "str_map_field",
]
