"""`AuthZPlugin.*` handlers: wire format in, verdict out."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from fixeduser.authz.authorizer import Authorizer
from fixeduser.authz.consulted import ConsultationCheck
from fixeduser.authz.decision import Verdict
from fixeduser.authz.wire import AuthZRequest, AuthZResponse
from fixeduser.clipping import DENIAL_LIMIT, clip
from fixeduser.plugin.server import Handler


def authz_handlers(authorizer: Authorizer, consulted: ConsultationCheck | None = None) -> dict[str, Handler]:
    """`consulted` learns of every AuthZReq while one of its checks waits."""

    async def request(payload: dict[str, Any]) -> dict[str, Any]:
        parsed = _parse(payload)
        if isinstance(parsed, AuthZResponse):
            return _dump(parsed)
        if consulted is not None and consulted.waiting:
            consulted.saw(parsed.uri)
        return _answer(await authorizer.authorize_request(parsed))

    async def response(payload: dict[str, Any]) -> dict[str, Any]:
        parsed = _parse(payload)
        if isinstance(parsed, AuthZResponse):
            return _dump(parsed)
        return _answer(await authorizer.authorize_response(parsed))

    return {"AuthZPlugin.AuthZReq": request, "AuthZPlugin.AuthZRes": response}


def _parse(payload: dict[str, Any]) -> AuthZRequest | AuthZResponse:
    try:
        return AuthZRequest.from_wire(payload)
    except ValidationError as exc:
        return AuthZResponse(allow=False, msg=f"fixeduser cannot read this authorization request: {exc}")


# Almost every answer is this one; building and dumping a model for it each time is needless work.
ALLOWED = AuthZResponse(allow=True)
_ALLOWED_WIRE = ALLOWED.model_dump(by_alias=True)


def _answer(verdict: Verdict) -> dict[str, Any]:
    return dict(_ALLOWED_WIRE) if verdict.allow else _dump(verdict.wire())


def _dump(response: AuthZResponse) -> dict[str, Any]:
    """The wire answer; a denial's message is clipped, as it may quote the request's own values."""
    wire = response.model_dump(by_alias=True)
    for key in ("Msg", "Err"):
        if len(wire[key]) > DENIAL_LIMIT:
            wire[key] = clip(wire[key], DENIAL_LIMIT)
    return wire
