"""The AuthZPlugin wire format, as the daemon sends and expects it."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field


class AuthZRequest(BaseModel):
    """`AuthZPlugin.AuthZReq` / `AuthZRes` body; empty fields are omitted by the daemon."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    user: str = Field("", alias="User")
    auth_method: str = Field("", alias="UserAuthNMethod")
    method: str = Field("", alias="RequestMethod")
    uri: str = Field("", alias="RequestUri")
    body_b64: str | None = Field(None, alias="RequestBody")
    headers: dict[str, str] | None = Field(None, alias="RequestHeaders")
    status: int = Field(0, alias="ResponseStatusCode")
    response_body_b64: str | None = Field(None, alias="ResponseBody")

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
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("request body is not valid base64") from None
