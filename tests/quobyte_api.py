"""A small stand-in for the Quobyte API (JSON-RPC 2.0 over HTTP POST, basic auth) for tests.

It implements the four methods fixeduser uses, with the documented error shape
`{"error": {"code", "message"}}`: `createVolume` (duplicate name -> ENTITY_EXISTS),
`resolveVolumeName` and `deleteVolume` (unknown -> ENTITY_NOT_FOUND), `getVolumeList`. Wrong
credentials get HTTP 401; `fail_next` queues HTTP statuses (503, ...) to answer before serving.

The Quobyte *client* cannot run here. `client_dir` is a plain directory standing in for its
mount: on createVolume the double makes `<client_dir>/<volume>` (owned by the root user/group
ids when numeric), and, for each `(user, group)` in `mapped`, a symlink
`<client_dir>/<user>#<group>@<volume>` -> `<volume>`, so the user-mapped paths the backend hands
to docker exist. No user mapping happens: files are owned by whoever writes them.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fixeduser.volumes.backends.quobyte import ENTITY_EXISTS, ENTITY_NOT_FOUND, INVALID_PARAMS, METHOD_NOT_FOUND


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# The symbols real Quobyte API errors carry (ErrorType/POSIXErrno), as Quobyte's own plugins test for.
NOT_FOUND, EXISTS = "ENTITY_NOT_FOUND/POSIX_ERROR_NONE", "ENTITY_EXISTS_ALREADY/POSIX_ERROR_NONE"


class QuobyteApiDouble:
    def __init__(
        self,
        *,
        user: str = "admin",
        password: str = "secret",
        client_dir: Path | None = None,
        mapped: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.user, self.password = user, password
        self.client_dir = client_dir
        self.mapped = list(mapped)
        self.volumes: dict[tuple[str, str], dict[str, Any]] = {}  # (tenant, name) -> volume
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_next: list[int] = []
        # Entity errors carry this client's codes; None sends a generic server error code instead, so
        # only the message symbol (which real Quobyte errors carry) tells what happened.
        self.entity_codes: tuple[int, int] | None = (ENTITY_NOT_FOUND, ENTITY_EXISTS)
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
        with self.lock:
            return sorted(name for (t, name) in self.volumes if tenant is None or t == tenant)

    # ------------------------------------------------------------------ methods

    def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "createVolume":
            return self._create(params)
        if method == "resolveVolumeName":
            volume = self.volumes.get((params.get("tenant_domain", ""), params.get("volume_name", "")))
            if volume is None:
                raise RpcError(self._code(0), f"{NOT_FOUND}: no volume {params.get('volume_name')!r}")
            return {"volume_uuid": volume["volume_uuid"]}
        if method == "deleteVolume":
            return self._delete(params)
        if method == "getVolumeList":
            return {"volume": list(self.volumes.values())}
        raise RpcError(METHOD_NOT_FOUND, f"method {method} not found")

    def _code(self, which: int) -> int:
        return -32000 if self.entity_codes is None else self.entity_codes[which]

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        name, tenant = params.get("name"), params.get("tenant_id")
        if not name or not tenant or not params.get("configuration_name"):
            raise RpcError(INVALID_PARAMS, "name, tenant_id and configuration_name are required")
        if (tenant, name) in self.volumes:
            raise RpcError(self._code(1), f"{EXISTS}: volume {name!r} exists in tenant {tenant!r}")
        volume = {
            "volume_uuid": str(uuid.uuid4()),
            "name": name,
            "tenant_domain": tenant,
            "configuration_name": params["configuration_name"],
            "root_user_id": params.get("root_user_id", "root"),
            "root_group_id": params.get("root_group_id", "root"),
        }
        self.volumes[(tenant, name)] = volume
        if self.client_dir is not None:
            top = self.client_dir / name
            top.mkdir(exist_ok=True)
            uid, gid = volume["root_user_id"], volume["root_group_id"]
            if uid.isdigit() and gid.isdigit():
                import os  # noqa: PLC0415 - only here

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
        raise RpcError(self._code(0), f"{NOT_FOUND}: no volume with uuid {params.get('volume_uuid')!r}")

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with double.lock:
                    if double.fail_next:
                        self._answer(double.fail_next.pop(0), {"error": "injected failure"})
                        return
                    expected = base64.b64encode(f"{double.user}:{double.password}".encode()).decode()
                    if self.headers.get("Authorization") != f"Basic {expected}":
                        self._answer(401)
                        return
                    try:
                        request = json.loads(raw)
                        result = double.dispatch(request["method"], request.get("params", {}))
                    except RpcError as exc:
                        self._answer(200, {"jsonrpc": "2.0", "id": request.get("id"), "error": {
                            "code": exc.code, "message": str(exc)}})  # fmt: skip
                        return
                    except (ValueError, KeyError):
                        self._answer(200, {"jsonrpc": "2.0", "id": None,
                                           "error": {"code": -32700, "message": "parse error"}})  # fmt: skip
                        return
                    self._answer(200, {"jsonrpc": "2.0", "id": request.get("id"), "result": result})

        return Handler
