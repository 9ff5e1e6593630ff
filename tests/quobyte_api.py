"""A small stand-in for the Quobyte API (JSON-RPC 2.0 over HTTP POST, basic auth) for tests.

It implements the methods fixeduser uses, with JSON-RPC 2.0 error shapes
`{"error": {"code", "message"}}`: `resolveTenantName` (name -> `tenant_id`), `createVolume`
(duplicate name -> ENTITY_EXISTS_ALREADY), `resolveVolumeName`, `eraseVolume` and the deprecated
`deleteVolume` (unknown -> ENTITY_NOT_FOUND), `getVolumeList`; any other method gets -32601
"Method not found", a body that is not JSON -32700 "Parse error", one without a method -32600
"Invalid Request". Entity errors are told apart only by the symbol in their message, as real
Quobyte errors are: their numeric code is not published, so the double sends `entity_code` (an
implementation-defined server error, -32000, by default) and tests can change it. Where the API
takes a tenant UUID (`createVolume.tenant_id`, `resolveVolumeName.tenant_domain`), a tenant name is
rejected as an unknown tenant. `tenants` maps tenant names to their UUIDs.

Authentication follows the real API: basic auth, answered with a session cookie; a request with a
valid cookie needs no basic auth. `expire_sessions()` forgets every cookie (the next cookie-only
request gets HTTP 401); `auth_log` records "basic"/"cookie" per accepted request. Wrong
credentials get HTTP 401; `fail_next` queues HTTP statuses (503, ...) to answer before serving;
`lose_answer_to` makes the next call of a method run but its connection close without an answer.

The Quobyte *client* cannot run here. `client_dir` is a plain directory standing in for its
mount: on createVolume the double makes `<client_dir>/<volume>` (owned by the root user/group
ids when numeric), and, for each `(user, group)` in `mapped`, a symlink
`<client_dir>/<user>#<group>@<volume>` -> `<volume>`, so the user-mapped paths the backend hands
to docker exist. No user mapping happens: files are owned by whoever writes them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fixeduser.volumes.backends.quobyte import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# The symbols real Quobyte API errors carry (ErrorType/POSIXErrno), as Quobyte's own plugins test for.
NOT_FOUND, EXISTS = "ENTITY_NOT_FOUND/POSIX_ERROR_NONE", "ENTITY_EXISTS_ALREADY/POSIX_ERROR_NONE"
SERVER_ERROR = -32000  # JSON-RPC 2.0: implementation-defined server error


class QuobyteApiDouble:
    def __init__(
        self,
        *,
        user: str = "admin",
        password: str = "secret",
        client_dir: Path | None = None,
        mapped: Iterable[tuple[str, str]] = (),
        tenants: Iterable[str] = ("t1", "t2"),
    ) -> None:
        self.user, self.password = user, password
        self.client_dir = client_dir
        self.mapped = list(mapped)
        self.tenants = {name: str(uuid.uuid4()) for name in tenants}
        self.volumes: dict[tuple[str, str], dict[str, Any]] = {}  # (tenant UUID, name) -> volume
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_next: list[int] = []
        self.lose_answer_to: str | None = None  # a method whose next call runs but gets no answer
        self.entity_code = SERVER_ERROR
        self.sessions: set[str] = set()
        self.auth_log: list[str] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> QuobyteApiDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def names(self, tenant: str | None = None) -> list[str]:
        """Volume names, of every tenant or of one (by name)."""
        with self.lock:
            wanted = None if tenant is None else self.tenants[tenant]
            return sorted(name for (t, name) in self.volumes if wanted is None or t == wanted)

    def volume(self, tenant: str, name: str) -> dict[str, Any]:
        """The volume `name` of the tenant named `tenant` (KeyError if there is none)."""
        return self.volumes[(self.tenants[tenant], name)]

    def has(self, tenant: str, name: str) -> bool:
        return (self.tenants[tenant], name) in self.volumes

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    # ------------------------------------------------------------------ methods

    def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "resolveTenantName":
            tenant_uuid = self.tenants.get(params.get("tenant_name", ""))
            if tenant_uuid is None:
                raise RpcError(self.entity_code, f"{NOT_FOUND}: no tenant {params.get('tenant_name')!r}")
            return {"tenant_id": tenant_uuid}
        if method == "createVolume":
            return self._create(params)
        if method == "resolveVolumeName":
            tenant_uuid = self._tenant_uuid(params.get("tenant_domain"))
            volume = self.volumes.get((tenant_uuid, params.get("volume_name", "")))
            if volume is None:
                raise RpcError(self.entity_code, f"{NOT_FOUND}: no volume {params.get('volume_name')!r}")
            return {"volume_uuid": volume["volume_uuid"]}
        if method in ("eraseVolume", "deleteVolume"):
            return self._delete(params)
        if method == "getVolumeList":
            return {"volume": list(self.volumes.values())}
        raise RpcError(METHOD_NOT_FOUND, "Method not found")

    def _tenant_uuid(self, tenant: Any) -> str:
        """Where the API wants a tenant UUID, a name (or anything else unknown) is an unknown tenant."""
        if not isinstance(tenant, str) or tenant not in self.tenants.values():
            raise RpcError(self.entity_code, f"{NOT_FOUND}: no tenant with UUID {tenant!r}")
        return tenant

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not name or not params.get("tenant_id"):
            raise RpcError(INVALID_PARAMS, "name and tenant_id are required")
        tenant = self._tenant_uuid(params.get("tenant_id"))
        if (tenant, name) in self.volumes:
            raise RpcError(self.entity_code, f"{EXISTS}: volume {name!r} exists in tenant {tenant!r}")
        volume = {
            "volume_uuid": str(uuid.uuid4()),
            "name": name,
            "tenant_domain": tenant,
            "configuration_name": params.get("configuration_name"),
            "root_user_id": params.get("root_user_id", "root"),
            "root_group_id": params.get("root_group_id", "root"),
        }
        self.volumes[(tenant, name)] = volume
        if self.client_dir is not None:
            top = self.client_dir / name
            top.mkdir(exist_ok=True)
            uid, gid = volume["root_user_id"], volume["root_group_id"]
            if uid.isdigit() and gid.isdigit():
                os.chown(top, int(uid), int(gid))
            for user, group in self.mapped:
                link = self.client_dir / f"{user}#{group}@{name}"
                if not link.is_symlink():
                    link.symlink_to(name)
        return {"volume_uuid": volume["volume_uuid"]}

    def _delete(self, params: dict[str, Any]) -> dict[str, Any]:
        for key, volume in list(self.volumes.items()):
            if volume["volume_uuid"] == params.get("volume_uuid"):
                del self.volumes[key]
                if self.client_dir is not None:
                    shutil.rmtree(self.client_dir / volume["name"], ignore_errors=True)
                    for user, group in self.mapped:
                        (self.client_dir / f"{user}#{group}@{volume['name']}").unlink(missing_ok=True)
                return {}
        raise RpcError(self.entity_code, f"{NOT_FOUND}: no volume with uuid {params.get('volume_uuid')!r}")

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any] | None = None, cookie: str | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if cookie is not None:
                    self.send_header("Set-Cookie", f"JSESSIONID={cookie}; Path=/; HttpOnly")
                self.end_headers()
                self.wfile.write(data)

            def _authenticate(self) -> tuple[bool, str | None]:
                """(accepted, a new session cookie to hand out)."""
                expected = base64.b64encode(f"{double.user}:{double.password}".encode()).decode()
                if self.headers.get("Authorization") == f"Basic {expected}":
                    double.auth_log.append("basic")
                    token = secrets.token_hex(8)
                    double.sessions.add(token)
                    return True, token
                for part in self.headers.get("Cookie", "").split(";"):
                    key, _, value = part.strip().partition("=")
                    if key == "JSESSIONID" and value in double.sessions:
                        double.auth_log.append("cookie")
                        return True, None
                return False, None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with double.lock:
                    if double.fail_next:
                        self._answer(double.fail_next.pop(0), {"error": "injected failure"})
                        return
                    accepted, cookie = self._authenticate()
                    if not accepted:
                        self._answer(401)
                        return
                    try:
                        request = json.loads(raw)
                    except ValueError:
                        self._answer(200, {"jsonrpc": "2.0", "id": None,
                                           "error": {"code": PARSE_ERROR, "message": "Parse error"}})  # fmt: skip
                        return
                    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                        invalid = {"code": INVALID_REQUEST, "message": "Invalid Request"}
                        self._answer(200, {"jsonrpc": "2.0", "id": None, "error": invalid})
                        return
                    try:
                        result = double.dispatch(request["method"], request.get("params") or {})
                    except RpcError as exc:
                        self._answer(200, {"jsonrpc": "2.0", "id": request.get("id"), "error": {
                            "code": exc.code, "message": str(exc)}}, cookie)  # fmt: skip
                        return
                    if double.lose_answer_to == request["method"]:
                        double.lose_answer_to = None
                        self.close_connection = True
                        return  # carried out, but no answer: the client sees the connection drop
                    self._answer(200, {"jsonrpc": "2.0", "id": request.get("id"), "result": result}, cookie)

        return Handler
