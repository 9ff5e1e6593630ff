"""The AuthZPlugin wire format, as the daemon sends and expects it."""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12


class AuthZWire(TypedDict, total=False):
    """`AuthZPlugin.AuthZReq` / `AuthZRes` body as the daemon sends it: it leaves out empty fields, and the
    response headers it adds are not read."""

    User: str
    UserAuthNMethod: str
    RequestMethod: str
    RequestUri: str
    RequestBody: str | None
    RequestHeaders: dict[str, str] | None
    ResponseStatusCode: int
    ResponseBody: str | None


# A TypedDict, not a model: the daemon's every call is read with it, mostly after the plugin has been idle
# (between docker commands), and then making a model instance was half of what reading a call cost
# (bench/NOTES.md#authz-wire).
_WIRE: TypeAdapter[AuthZWire] = TypeAdapter(AuthZWire)


@dataclass(slots=True)  # not frozen: a frozen one takes twice as long to build (bench/NOTES.md#audit-record)
class AuthZRequest:
    """One AuthZ call's request (and, in AuthZRes, the daemon's response), as the decisions read it."""

    user: str = ""
    auth_method: str = ""
    method: str = ""
    uri: str = ""
    body_b64: str | None = None
    headers: dict[str, str] | None = None
    status: int = 0
    response_body_b64: str | None = None

    @classmethod
    def from_wire(cls, payload: object) -> AuthZRequest:
        """Validate the daemon's JSON object; raises `pydantic.ValidationError`."""
        wire = _WIRE.validate_python(payload)
        return cls(
            user=wire.get("User", ""),
            auth_method=wire.get("UserAuthNMethod", ""),
            method=wire.get("RequestMethod", ""),
            uri=wire.get("RequestUri", ""),
            body_b64=wire.get("RequestBody"),
            headers=wire.get("RequestHeaders"),
            status=wire.get("ResponseStatusCode", 0),
            response_body_b64=wire.get("ResponseBody"),
        )

    @property
    def body(self) -> bytes:
        return _decode(self.body_b64)

    @property
    def response_body(self) -> bytes:
        return _decode(self.response_body_b64)

    def header(self, name: str) -> str | None:
        if not self.headers:
            return None
        if name in self.headers:  # the daemon sends canonical names (Go's http.Header)
            return self.headers[name]
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


class AuthZResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    allow: bool = Field(alias="Allow")
    msg: str = Field("", alias="Msg")
    err: str = Field("", alias="Err")


def _decode(value: str | None) -> bytes:
    if not value:
        return b""
    try:
        return binascii.a2b_base64(value, strict_mode=True)  # what the daemon writes: Go's padded StdEncoding
    except (binascii.Error, ValueError):
        raise ValueError("request body is not valid base64") from None
